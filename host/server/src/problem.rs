//! Every error answer is RFC 9457 problem JSON: a stable `type`, the status, a sentence, and
//! for bad input the fields at fault as JSON pointers (`/context/customer_id`) or template
//! paths (`steps[2] (ship).depends_on[0]`).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tasker_core::template::{ContextError, TemplateError};
use tasker_engine::ops::OpsError;
use tasker_store::StoreError;
use utoipa::ToSchema;

/// One field at fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// A JSON pointer into the request body, a query parameter (`?limit`), or a template path.
    pub pointer: String,
    pub detail: String,
}

/// An error answer. Small (slug and title are static), as every handler returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[schema(description = "An error answer: RFC 9457 problem details (`application/problem+json`).")]
pub struct Problem {
    /// Serialized as `type`, `urn:tasker:problem:<slug>`: what clients match on.
    #[serde(rename = "type", serialize_with = "problem_type")]
    #[schema(
        pattern = "^urn:tasker:problem:[a-z][a-z-]*$",
        example = "urn:tasker:problem:not-found"
    )]
    pub slug: &'static str,
    /// The status's reason phrase.
    pub title: &'static str,
    #[schema(minimum = 400, maximum = 599)]
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// Extra members of some problems (e.g. the plugins available, the existing task).
    #[serde(flatten, skip_serializing_if = "serde_json::Map::is_empty")]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Problem {
    pub fn new(status: StatusCode, slug: &'static str, detail: impl Into<String>) -> Self {
        Problem {
            slug,
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: detail.into(),
            errors: Vec::new(),
            extra: Default::default(),
        }
    }

    /// 400: the request is malformed (not JSON, a wrong type, an unknown field).
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::BAD_REQUEST, "bad-request", detail)
    }

    /// 422: well-formed, but refused (a template or context that does not validate).
    pub fn invalid(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::NOT_FOUND, "not-found", detail)
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::CONFLICT, "conflict", detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail)
    }

    pub fn internal(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", detail)
    }

    pub fn field(mut self, pointer: impl Into<String>, detail: impl Into<String>) -> Self {
        self.errors.push(FieldError {
            pointer: pointer.into(),
            detail: detail.into(),
        });
        self
    }

    pub fn with(mut self, key: &str, value: serde_json::Value) -> Self {
        self.extra.insert(key.to_owned(), value);
        self
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

fn problem_type<S: serde::Serializer>(slug: &&'static str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("urn:tasker:problem:{slug}"))
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut res = (status, body).into_response();
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        res
    }
}

impl From<StoreError> for Problem {
    fn from(e: StoreError) -> Self {
        match &e {
            StoreError::NotFound(_) => Problem::not_found(e.to_string()),
            StoreError::InvalidInput(_) | StoreError::Constraint { .. } => {
                Problem::invalid(e.to_string())
            }
            StoreError::InvalidState(_) => Problem::conflict(e.to_string()),
            StoreError::Unavailable(_)
            | StoreError::Conflict { .. }
            | StoreError::Connect { .. }
            | StoreError::DatabaseMissing { .. } => {
                tracing::warn!(error = %e, "store unavailable");
                Problem::unavailable(e.to_string())
            }
            StoreError::Decode { .. }
            | StoreError::Migrate(_)
            | StoreError::Database(_)
            | StoreError::SchemaOlder { .. }
            | StoreError::SchemaNewer { .. } => {
                tracing::error!(error = %e, "store error");
                Problem::internal(e.to_string())
            }
        }
    }
}

impl From<ContextError> for Problem {
    fn from(e: ContextError) -> Self {
        let mut p = Problem::invalid(format!(
            "the context does not match the schema of {}",
            e.template
        ));
        for err in e.errors {
            let at = if err.location == "/" {
                "/context".to_owned()
            } else {
                format!("/context{}", err.location)
            };
            p = p.field(at, err.message);
        }
        p
    }
}

impl From<TemplateError> for Problem {
    fn from(e: TemplateError) -> Self {
        let mut p = Problem::invalid(format!(
            "the template is invalid ({} problem{})",
            e.problems.len(),
            if e.problems.len() == 1 { "" } else { "s" }
        ));
        for pr in e.problems {
            p = p.field(pr.location, pr.message);
        }
        p
    }
}

impl From<OpsError> for Problem {
    fn from(e: OpsError) -> Self {
        match e {
            OpsError::Store(e) => e.into(),
            OpsError::Context(e) => e.into(),
        }
    }
}

/// A serde path (`tags[0].name`, as `serde_path_to_error` prints it) as a JSON pointer
/// (`/tags/0/name`); `.` is the root.
pub(crate) fn pointer_of(path: &str) -> String {
    if path == "." || path.is_empty() {
        return String::new();
    }
    let mut out = String::new();
    for part in path.split('.') {
        let mut rest = part;
        // `a[1][2]` is `a`, then indices 1 and 2.
        let name_end = rest.find('[').unwrap_or(rest.len());
        if name_end > 0 {
            out.push('/');
            out.push_str(&rest[..name_end].replace('~', "~0").replace('/', "~1"));
        }
        rest = &rest[name_end..];
        while let Some(close) = rest.find(']') {
            out.push('/');
            out.push_str(&rest[1..close]);
            rest = &rest[close + 1..];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_paths_become_json_pointers() {
        assert_eq!(pointer_of("."), "");
        assert_eq!(pointer_of("context"), "/context");
        assert_eq!(pointer_of("tags[0]"), "/tags/0");
        assert_eq!(pointer_of("a.b[1][2].c"), "/a/b/1/2/c");
        assert_eq!(pointer_of("a/b"), "/a~1b");
    }

    #[test]
    fn problems_are_rfc9457_json() {
        let p = Problem::invalid("bad").field("/context/x", "is required");
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["type"], "urn:tasker:problem:invalid");
        assert_eq!(v["status"], 422);
        assert_eq!(v["title"], "Unprocessable Entity");
        assert_eq!(v["errors"][0]["pointer"], "/context/x");
        let res = p.into_response();
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            res.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
    }
}
