//! The API described as OpenAPI 3.1, generated from the code: each handler's
//! `#[utoipa::path]`, the views' `ToSchema` derives, and the route table's access rules
//! (a bearer requirement on every route that is not public). Served at `/openapi.json`.
//!
//! Types of other crates (the state machine's states, error kinds, ids, a template's
//! definition) cannot derive `ToSchema` here: they are described by the schema-only types
//! below, checked against the real types by the tests of this module.

use std::sync::OnceLock;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, HeaderBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToResponse, ToSchema};

use crate::handlers::{events, health, hooks, plugins, schedules, steps, tasks, templates, tokens};
use crate::problem::{FieldError, Problem};
use crate::routes::{Access, ROUTES};

/// The name of the bearer security scheme every non-public route requires.
pub const BEARER: &str = "bearer";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tasker API",
        version = env!("CARGO_PKG_VERSION"),
        description = "Tasker's HTTP API: templates, tasks and their steps, plugins, schedules and tokens. \
            Every error is an RFC 9457 problem (`application/problem+json`); every route but \
            the health probes and this description needs `Authorization: Bearer <token>`."
    ),
    paths(
        health::live,
        health::ready,
        health::status,
        document,
        crate::metrics::scrape_route,
        templates::register,
        templates::list,
        templates::show,
        tasks::create,
        tasks::list,
        tasks::counts,
        tasks::show,
        tasks::attempts,
        tasks::transitions,
        tasks::cancel,
        tasks::retry,
        events::task_events,
        events::events,
        steps::show,
        steps::logs,
        steps::resolve,
        plugins::list,
        plugins::upload,
        plugins::show,
        hooks::list,
        hooks::deliveries,
        hooks::redeliver,
        schedules::create,
        schedules::list,
        schedules::show,
        schedules::delete,
        schedules::pause,
        schedules::resume,
        crate::session::show,
        crate::session::sign_in,
        crate::session::sign_out,
        tokens::list,
        tokens::create,
        tokens::revoke,
    ),
    components(
        schemas(Problem, FieldError),
        responses(
            BadRequest,
            Unauthorized,
            Forbidden,
            NotFound,
            Conflict,
            TooLarge,
            UnsupportedMediaType,
            Invalid,
            Unavailable,
        )
    ),
    modifiers(&AccessRules),
    tags(
        (name = "health", description = "Probes and what the store holds"),
        (name = "meta", description = "This description"),
        (name = "templates", description = "Workflow templates"),
        (name = "tasks", description = "Runs of a template"),
        (name = "steps", description = "The steps of a task"),
        (name = "plugins", description = "The components of the server's plugin directory"),
        (name = "hooks", description = "Event hooks, their deliveries and dead letters"),
        (name = "schedules", description = "Cron schedules that create tasks"),
        (name = "session", description = "The web page's sign-in (a cookie holding a token)"),
        (name = "tokens", description = "Bearer tokens"),
    )
)]
pub struct ApiDoc;

/// The route table's access rules, written into the document: the HTTP bearer security
/// scheme, and on every route that is not public the bearer requirement, the permission it
/// needs (in its description), its 401 and 503 (the token is looked up in the store) and,
/// where a permission is needed, its 403.
struct AccessRules;

impl Modify for AccessRules {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for route in ROUTES {
            let Some(item) = openapi.paths.paths.get_mut(route.path) else {
                continue;
            };
            let op = match route.method {
                "get" => item.get.as_mut(),
                "post" => item.post.as_mut(),
                "put" => item.put.as_mut(),
                "patch" => item.patch.as_mut(),
                "delete" => item.delete.as_mut(),
                _ => None,
            };
            let Some(op) = op else { continue };
            let needs = match route.access {
                Access::Public => continue,
                Access::Authenticated => "Needs a token (any valid one).".to_owned(),
                Access::Need(p) => format!("Needs a token with the permission `{p}`."),
            };
            op.security = Some(vec![SecurityRequirement::new(BEARER, Vec::<String>::new())]);
            op.description = Some(match op.description.take() {
                Some(d) if !d.is_empty() => format!("{d}\n\n{needs}"),
                _ => needs,
            });
            let responses = &mut op.responses.responses;
            let mut add = |status: &str, name: &str| {
                responses.insert(status.to_owned(), RefOr::Ref(Ref::from_response_name(name)));
            };
            add("401", "Unauthorized");
            if matches!(route.access, Access::Need(_)) {
                add("403", "Forbidden");
            }
            add("503", "Unavailable");
        }
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("tkr_<64 hex digits>")
                    .description(Some(
                        "A token made with `tasker tokens create` or `POST /v1/tokens`.",
                    ))
                    .build(),
            ),
        );
    }
}

/// The media type of every error answer.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Reusable error answers (`#/components/responses/<Name>`): a problem of one status, with
/// an example of it.
macro_rules! problem_responses {
    ($($name:ident: $status:ident, $slug:literal, $detail:literal;)*) => {$(
        #[doc = $detail]
        pub struct $name;

        impl<'r> ToResponse<'r> for $name {
            fn response() -> (&'r str, RefOr<utoipa::openapi::Response>) {
                let example = serde_json::to_value(Problem::new(StatusCode::$status, $slug, $detail))
                    .expect("a problem serializes");
                let mut response = ResponseBuilder::new().description($detail).content(
                    PROBLEM_JSON,
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Problem")))
                        .example(Some(example))
                        .build(),
                );
                if StatusCode::$status == StatusCode::UNAUTHORIZED {
                    response = response.header(
                        "WWW-Authenticate",
                        HeaderBuilder::new()
                            .schema(
                                utoipa::openapi::ObjectBuilder::new()
                                    .schema_type(utoipa::openapi::schema::Type::String),
                            )
                            .description(Some("`Bearer realm=\"tasker\"`"))
                            .build(),
                    );
                }
                (stringify!($name), response.build().into())
            }
        }
    )*};
}

problem_responses! {
    BadRequest: BAD_REQUEST, "bad-request",
        "The request is malformed: a path id, a query parameter or a body field (named in `errors`)";
    Unauthorized: UNAUTHORIZED, "unauthorized",
        "No token, or a token that is unknown, revoked or expired";
    Forbidden: FORBIDDEN, "forbidden",
        "The token lacks the route's permission (named in `missing_permission`)";
    NotFound: NOT_FOUND, "not-found", "No such object";
    Conflict: CONFLICT, "conflict", "The object's state does not allow this";
    TooLarge: PAYLOAD_TOO_LARGE, "too-large", "The body is larger than the server accepts";
    UnsupportedMediaType: UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type",
        "The body's content type is not one this route reads";
    Invalid: UNPROCESSABLE_ENTITY, "invalid",
        "Well-formed but refused: the fields at fault are in `errors`";
    Unavailable: SERVICE_UNAVAILABLE, "unavailable", "The store does not answer";
}

/// The document as JSON, built once.
pub fn json() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        ApiDoc::openapi()
            .to_pretty_json()
            .expect("the OpenAPI document serializes")
    })
}

/// `GET /openapi.json`: this description.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", body = Object))
)]
pub async fn document() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], json()).into_response()
}

// Schema-only types: what other crates' types look like in JSON.

/// The state of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = TaskState)]
pub enum TaskStateName {
    Pending,
    InProgress,
    Complete,
    Error,
    Cancelled,
}

/// The state of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = StepState)]
pub enum StepStateName {
    Pending,
    InProgress,
    WaitingForRetry,
    Complete,
    Error,
    Cancelled,
    ResolvedManually,
}

/// Why an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = ErrorKind)]
pub enum ErrorKindName {
    Timeout,
    OutOfFuel,
    OutOfMemory,
    Trap,
    CapabilityDenied,
    BadOutput,
    HandlerError,
    Load,
    Incompatible,
    LeaseLost,
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = AttemptOutcome)]
pub enum AttemptOutcomeName {
    Completed,
    Failed,
    LeaseLost,
    Released,
    Cancelled,
}

/// A handler's log record level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = LogLevel)]
pub enum LogLevelName {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// What a failure led to: a retry, or the step in error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = RetryDecision)]
pub enum RetryDecisionName {
    Retry,
    Permanent,
    Exhausted,
}

/// Which `tasker:plugin` world a component exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
#[schema(as = World)]
pub enum WorldName {
    StepHandler,
    EventHook,
    RetryPolicy,
}

/// The store behind the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = StoreBackend)]
pub enum StoreBackendName {
    Postgres,
    Sqlite,
}

/// A template's definition, as registered (YAML or JSON); its steps and hooks are
/// described in the template reference.
#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateDefinition {
    pub namespace: String,
    pub name: String,
    /// A semantic version.
    #[schema(example = "1.0.0")]
    pub version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub description: Option<String>,
    /// JSON Schema that a task's context must satisfy.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub context_schema: Option<Value>,
    #[schema(value_type = Vec<Object>, min_items = 1)]
    pub steps: Vec<Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    pub hooks: Vec<Value>,
    /// The template-wide retry policy component (`name@version` or `blake3:<hex>`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Value)]
    pub retry_policy: Option<Value>,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::json;
    use tasker_core::error_kind::ErrorKind;
    use tasker_core::state::{StepState, TaskState};
    use tasker_sandbox::World;
    use tasker_store::{AttemptOutcome, LogLevel, RetryDecision};

    use super::*;

    /// The `enum` values of schema-only type `T`.
    fn names<T: ToSchema>() -> BTreeSet<String> {
        let schema = serde_json::to_value(T::schema()).unwrap();
        schema["enum"]
            .as_array()
            .unwrap_or_else(|| panic!("{} has no enum: {schema}", T::name()))
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    }

    fn set<S: Serialize>(all: impl IntoIterator<Item = S>) -> BTreeSet<String> {
        all.into_iter()
            .map(|s| {
                serde_json::to_value(s)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }

    #[test]
    fn schema_only_enums_name_every_variant_of_the_real_ones() {
        assert_eq!(names::<TaskStateName>(), set(TaskState::ALL));
        assert_eq!(names::<StepStateName>(), set(StepState::ALL));
        assert_eq!(names::<ErrorKindName>(), set(ErrorKind::ALL));
        // No ALL on these: an exhaustive match fails to compile when one gains a variant.
        let outcome = |o: AttemptOutcome| match o {
            AttemptOutcome::Completed
            | AttemptOutcome::Failed
            | AttemptOutcome::LeaseLost
            | AttemptOutcome::Released
            | AttemptOutcome::Cancelled => o.as_str(),
        };
        let outcomes = [
            AttemptOutcome::Completed,
            AttemptOutcome::Failed,
            AttemptOutcome::LeaseLost,
            AttemptOutcome::Released,
            AttemptOutcome::Cancelled,
        ];
        assert_eq!(names::<AttemptOutcomeName>(), set(outcomes.map(outcome)));
        let decision = |d: RetryDecision| match d {
            RetryDecision::Retry | RetryDecision::Permanent | RetryDecision::Exhausted => {
                d.as_str()
            }
        };
        let decisions = [
            RetryDecision::Retry,
            RetryDecision::Permanent,
            RetryDecision::Exhausted,
        ];
        assert_eq!(names::<RetryDecisionName>(), set(decisions.map(decision)));
        let world = |w: World| match w {
            World::StepHandler | World::EventHook | World::RetryPolicy => w.as_str(),
        };
        let worlds = [World::StepHandler, World::EventHook, World::RetryPolicy];
        assert_eq!(names::<WorldName>(), set(worlds.map(world)));
        assert_eq!(names::<StoreBackendName>(), set(["postgres", "sqlite"]));
        let level = |l: LogLevel| match l {
            LogLevel::Trace
            | LogLevel::Debug
            | LogLevel::Info
            | LogLevel::Warn
            | LogLevel::Error => l.as_str(),
        };
        let levels = [
            LogLevel::Trace,
            LogLevel::Debug,
            LogLevel::Info,
            LogLevel::Warn,
            LogLevel::Error,
        ];
        assert_eq!(names::<LogLevelName>(), set(levels.map(level)));
    }

    #[test]
    fn the_document_is_openapi_3_1_with_every_route() {
        let doc: Value = serde_json::from_str(json()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(doc["info"]["title"], "Tasker API");
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(
            doc["components"]["securitySchemes"][BEARER],
            json!({"type": "http", "scheme": "bearer", "bearerFormat": "tkr_<64 hex digits>",
                   "description": "A token made with `tasker tokens create` or `POST /v1/tokens`."})
        );
        for r in ROUTES {
            let op = &doc["paths"][r.path][r.method];
            assert!(op.is_object(), "{r:?} is not in the document");
            let secured = op["security"] == json!([{BEARER: []}]);
            assert_eq!(secured, r.access != Access::Public, "{r:?}: {op}");
        }
    }

    #[test]
    fn the_page_size_bound_is_the_stores() {
        let doc: Value = serde_json::from_str(json()).unwrap();
        for path in ["/v1/tasks", "/v1/templates"] {
            let limit = doc["paths"][path]["get"]["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == "limit")
                .unwrap_or_else(|| panic!("{path} has no ?limit"));
            assert_eq!(limit["schema"]["maximum"], tasker_store::MAX_PAGE, "{path}");
            assert_eq!(limit["schema"]["minimum"], 1, "{path}");
        }
    }
}
