//! `/v1/plugins`: the components of this server's plugin directory.

use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;
use tasker_sandbox::{Plugin, PluginRef};
use utoipa::ToSchema;

use crate::openapi::{BadRequest, NotFound, WorldName};
use crate::problem::Problem;
use crate::state::AppState;

/// A component of the plugin directory.
#[derive(Debug, Serialize, ToSchema)]
pub struct PluginView {
    pub name: String,
    pub version: String,
    /// `blake3:<hex>`.
    #[schema(pattern = "^blake3:[0-9a-f]{64}$")]
    pub hash: String,
    /// The `tasker:plugin` world it exports.
    #[schema(value_type = WorldName)]
    pub world: &'static str,
    pub size_bytes: u64,
    /// The file in the plugin directory.
    pub file: String,
    /// Compiled (or read from the precompiled cache) and ready to run.
    pub loaded: bool,
}

impl PluginView {
    fn of(p: &Plugin) -> PluginView {
        PluginView {
            name: p.name.clone(),
            version: p.version.clone(),
            hash: format!("blake3:{}", p.hash.to_hex()),
            world: p.world().as_str(),
            size_bytes: p.size_bytes,
            file: p
                .path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default(),
            loaded: p.is_loaded(),
        }
    }
}

/// `GET /v1/plugins`: by name, then version.
#[utoipa::path(
    get,
    path = "/v1/plugins",
    operation_id = "list_plugins",
    tag = "plugins",
    responses(
        (status = 200, description = "Every plugin", body = Vec<PluginView>),
    )
)]
pub async fn list(State(state): State<AppState>) -> Json<Vec<PluginView>> {
    let mut all: Vec<PluginView> = state
        .sandbox()
        .registry()
        .plugins()
        .iter()
        .map(|p| PluginView::of(p))
        .collect();
    all.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
    Json(all)
}

/// `GET /v1/plugins/{plugin}`: by `name`, `name@version` or `blake3:<hex>`.
#[utoipa::path(
    get,
    path = "/v1/plugins/{plugin}",
    operation_id = "show_plugin",
    tag = "plugins",
    params((
        "plugin" = String, Path,
        description = "`name` (its newest version), `name@version` or `blake3:<hex>`",
        example = "echo@0.1.0"
    )),
    responses(
        (status = 200, description = "The plugin", body = PluginView),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
    )
)]
pub async fn show(
    State(state): State<AppState>,
    Path(plugin): Path<String>,
) -> Result<Json<PluginView>, Problem> {
    let r: PluginRef = plugin
        .parse()
        .map_err(|e: String| Problem::bad_request(e.clone()).field("{plugin}", e))?;
    let p = state
        .sandbox()
        .registry()
        .resolve(&r)
        .map_err(|e| Problem::not_found(format!("{r}: {e}")))?;
    Ok(Json(PluginView::of(&p)))
}
