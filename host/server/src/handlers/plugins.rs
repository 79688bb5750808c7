//! `/v1/plugins`: the components of this server's plugin directory.

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::Serialize;
use tasker_sandbox::{Plugin, PluginRef, UploadError};
use utoipa::{IntoParams, ToSchema};

use super::query;
use crate::openapi::{
    BadRequest, Conflict, Invalid, NotFound, TooLarge, UnsupportedMediaType, WorldName,
};
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
    /// When this server found the file (uploaded, or seen by a directory scan).
    pub found_at: chrono::DateTime<chrono::Utc>,
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
            found_at: p.found_at.into(),
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

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// The plugin's name: ASCII letters, digits, `_` and `-`.
    name: Option<String>,
    /// Its semver version; `name@version` is immutable once installed.
    version: Option<String>,
}

/// `POST /v1/plugins?name=…&version=…`: the body is the component (`application/wasm`).
/// It is checked (it compiles, every import is provided, it exports a world of this host)
/// and written atomically into the plugin directory, where every worker watching it loads
/// it. 201 when installed; 200 with the installed plugin when its hash already is.
#[utoipa::path(
    post,
    path = "/v1/plugins",
    operation_id = "upload_plugin",
    tag = "plugins",
    params(UploadQuery),
    request_body(content = Vec<u8>, content_type = "application/wasm", description = "A WebAssembly component"),
    responses(
        (status = 201, description = "Installed", body = PluginView),
        (status = 200, description = "These bytes were already installed", body = PluginView),
        (status = 400, response = BadRequest),
        (status = 409, response = Conflict),
        (status = 413, response = TooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = Invalid),
    )
)]
pub async fn upload(
    State(state): State<AppState>,
    uri: Uri,
    req: Request,
) -> Result<Response, Problem> {
    let q: UploadQuery = query(&uri)?;
    let need = |v: Option<String>, what: &str| {
        v.filter(|s| !s.is_empty()).ok_or_else(|| {
            Problem::bad_request(format!("?{what} is required"))
                .field(format!("?{what}"), "missing")
        })
    };
    let (name, version) = (need(q.name, "name")?, need(q.version, "version")?);
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim();
    if mime != "application/wasm" && mime != "application/octet-stream" {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            format!("a plugin is application/wasm, not {ct:?}"),
        ));
    }
    let limit = state.config().max_plugin_bytes;
    let bytes = axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|_| {
            Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-large",
                format!("a plugin upload is at most {limit} bytes"),
            )
        })?;
    let registry = state.sandbox().registry().clone();
    match registry.install(&name, &version, bytes.to_vec()).await {
        Ok((p, created)) => {
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok((status, Json(PluginView::of(&p))).into_response())
        }
        Err(e @ UploadError::BadName(_)) => Err(Problem::bad_request(e.to_string())),
        Err(e @ UploadError::VersionTaken { .. }) => Err(Problem::conflict(e.to_string())),
        Err(UploadError::Invalid(e)) => Err(Problem::invalid(format!(
            "the component cannot run on this host: {e}"
        ))),
        Err(e @ UploadError::Io(_)) => {
            tracing::error!(error = %e, "plugin upload failed");
            Err(Problem::internal(e.to_string()))
        }
    }
}
