//! `/v1/templates`: register (YAML or JSON), list, show one version with its graph.

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tasker_core::template::{Grants, Template};
use tasker_sandbox::MissingComponents;
use tasker_store::{Store, StoreError};
use utoipa::{IntoParams, ToSchema};

use super::{limit, query};
use crate::body::{body_bytes, is_json};
use crate::openapi::{
    BadRequest, Conflict, Invalid, NotFound, TemplateDefinition, TooLarge, UnsupportedMediaType,
};
use crate::problem::Problem;
use crate::state::AppState;
use crate::views::{GraphView, PageView, TemplateDetail, TemplateView};

/// A registration: the template's key and graph.
#[derive(Debug, Serialize, ToSchema)]
pub struct Registered {
    /// `namespace/name@version`.
    pub key: String,
    /// False when this exact definition was already registered.
    pub created: bool,
    pub graph: GraphView,
    /// What a registration with `?allow_missing_handlers=true` went ahead despite: each
    /// component the plugin directory lacks, one line each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RegisterQuery {
    /// `true`: register even if this server's plugin directory lacks components the
    /// template names (ahead of a deploy); the answer's `warnings` name them.
    #[param(value_type = Option<bool>)]
    allow_missing_handlers: Option<String>,
}

/// The problem of a template naming components the plugin directory lacks: each one at its
/// template path, and what the directory offers (closest first) as `available`.
pub(crate) fn missing_components_problem(m: &MissingComponents, hint: &str) -> Problem {
    let problem = Problem::invalid(format!(
        "template {} runs components that this server's plugin directory does not provide{hint}",
        m.template
    ));
    m.missing
        .iter()
        .fold(problem, |p, c| {
            p.field(&c.at, format!("{}: {}", c.reference, c.why))
        })
        .with("available", json!(m.available))
}

/// `POST /v1/templates`: 201 when registered, 200 when this exact definition already was.
#[utoipa::path(
    post,
    path = "/v1/templates",
    operation_id = "register_template",
    tag = "templates",
    params(RegisterQuery),
    request_body(
        description = "The template, as YAML (the default without a content type) or JSON",
        content(
            (TemplateDefinition = "application/yaml"),
            (TemplateDefinition = "application/json"),
        )
    ),
    responses(
        (status = 201, description = "Registered", body = Registered,
            headers(("Location" = String, description = "The template's URL"))),
        (status = 200, description = "This exact definition was already registered",
            body = Registered,
            headers(("Location" = String, description = "The template's URL"))),
        (status = 400, response = BadRequest),
        (status = 409, response = Conflict),
        (status = 413, response = TooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = Invalid),
    )
)]
pub async fn register(
    State(state): State<AppState>,
    uri: Uri,
    req: Request,
) -> Result<Response, Problem> {
    let q: RegisterQuery = query(&uri)?;
    let allow_missing = match q.allow_missing_handlers.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            let msg = format!("'{other}' is not true or false");
            return Err(
                Problem::bad_request(format!("?allow_missing_handlers: {msg}"))
                    .field("?allow_missing_handlers", msg),
            );
        }
    };
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/yaml")
        .to_owned();
    if !is_json(&ct) && !is_yaml(&ct) {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            format!("a template is application/yaml or application/json, not {ct}"),
        ));
    }
    let bytes = body_bytes(req, &()).await?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|e| Problem::bad_request(format!("the body is not UTF-8: {e}")))?;
    // JSON is YAML: one parser reports every problem with its location.
    let template = Template::from_yaml_named(text, "request body")?;
    check_grant_paths(&template, state.sandbox().grants_base())?;
    // A template naming a component this server cannot run is refused before it is
    // written, unless it is registered ahead of a deploy on purpose.
    let mut warnings = Vec::new();
    if let Err(m) = tasker_sandbox::check_components(state.sandbox().registry(), &template) {
        if !allow_missing {
            return Err(missing_components_problem(
                &m,
                " (register it ahead of a deploy with ?allow_missing_handlers=true)",
            ));
        }
        warnings = m
            .missing
            .iter()
            .map(|c| {
                format!(
                    "{}: {}: {}; registered anyway (?allow_missing_handlers)",
                    c.at, c.reference, c.why
                )
            })
            .collect();
    }
    let reg = state
        .store()
        .register_template_at(&template, state.now())
        .await
        .map_err(|e| match e {
            StoreError::Constraint { .. } => Problem::conflict(format!(
                "{} is registered with another definition: register a new version ({e})",
                template.key()
            )),
            e => e.into(),
        })?;
    let status = if reg.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let body = Registered {
        key: reg.key,
        created: reg.created,
        graph: GraphView::of(&template),
        warnings,
    };
    let location = format!(
        "/v1/templates/{}/{}/{}",
        template.namespace, template.name, template.version
    );
    Ok((status, [(header::LOCATION, location)], Json(body)).into_response())
}

fn is_yaml(ct: &str) -> bool {
    let mime = ct.split(';').next().unwrap_or("").trim();
    matches!(
        mime,
        "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml"
    )
}

/// Granted directories are kept as written; each worker resolves a relative one against
/// its grants base. Checked here against this server's base (its own workers'), so a
/// missing directory is refused before any attempt needs it.
fn check_grant_paths(t: &Template, base: &std::path::Path) -> Result<(), Problem> {
    let mut bad: Vec<(String, String)> = Vec::new();
    let mut check = |at: String, grants: &Grants| {
        for (i, d) in grants.dirs.iter().enumerate() {
            let full = base.join(&d.host);
            let problem = if full.is_dir() {
                continue;
            } else if std::path::Path::new(&d.host).is_absolute() {
                format!("'{}' is not a directory on the server", d.host)
            } else {
                format!(
                    "'{}' is not a directory on the server ({} resolved against its grants base)",
                    d.host,
                    full.display()
                )
            };
            bad.push((format!("{at}.grants.dirs[{i}].host"), problem));
        }
    };
    for (i, s) in t.steps.iter().enumerate() {
        check(format!("steps[{i}] ({})", s.name), &s.grants);
    }
    for (i, h) in t.hooks.iter().enumerate() {
        check(format!("hooks[{i}]"), &h.grants);
    }
    if bad.is_empty() {
        return Ok(());
    }
    Err(bad.into_iter().fold(
        Problem::invalid("granted directories must exist (relative ones under the grants base)"),
        |p, (at, m)| p.field(at, m),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    /// The page size (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    limit: Option<String>,
}

/// `GET /v1/templates`: in key order.
#[utoipa::path(
    get,
    path = "/v1/templates",
    operation_id = "list_templates",
    tag = "templates",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of templates", body = PageView<TemplateView>),
        (status = 400, response = BadRequest),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    uri: axum::http::Uri,
) -> Result<Json<PageView<TemplateView>>, Problem> {
    let q: ListQuery = query(&uri)?;
    let limit = limit(q.limit.as_deref())?;
    let page = state
        .store()
        .list_templates(q.cursor.as_deref(), limit)
        .await?;
    Ok(Json(PageView {
        items: page.items.into_iter().map(TemplateView::from).collect(),
        next_cursor: page.next,
    }))
}

/// `GET /v1/templates/{namespace}/{name}/{version}`: one version with its graph.
#[utoipa::path(
    get,
    path = "/v1/templates/{namespace}/{name}/{version}",
    operation_id = "show_template",
    tag = "templates",
    params(
        ("namespace" = String, Path, description = "The template's namespace"),
        ("name" = String, Path, description = "The template's name"),
        ("version" = String, Path, description = "The template's version", example = "1.0.0"),
    ),
    responses(
        (status = 200, description = "The template", body = TemplateDetail),
        (status = 404, response = NotFound),
    )
)]
pub async fn show(
    State(state): State<AppState>,
    Path((namespace, name, version)): Path<(String, String, String)>,
) -> Result<Json<TemplateDetail>, Problem> {
    let key = format!("{namespace}/{name}@{version}");
    let t = state
        .store()
        .template(&key)
        .await?
        .ok_or_else(|| Problem::not_found(format!("no template {key} is registered")))?;
    Ok(Json(TemplateDetail {
        graph: GraphView::of(&t),
        key,
        definition: t,
    }))
}
