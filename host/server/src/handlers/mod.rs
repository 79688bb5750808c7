//! The route handlers, one file per resource, and what they share: path ids, query strings
//! and paging, each refused with a problem naming the parameter.

pub mod events;
pub mod health;
pub mod hooks;
pub mod plugins;
pub mod schedules;
pub mod steps;
pub mod tasks;
pub mod templates;
pub mod tokens;

use axum::http::Uri;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;

use crate::problem::Problem;

/// The default page size of listings.
pub const DEFAULT_LIMIT: u32 = 50;

/// A path id (`/v1/tasks/{id}`) as a number.
pub(crate) fn path_id<T: From<i64>>(raw: &str, what: &str) -> Result<T, Problem> {
    raw.parse::<i64>().map(T::from).map_err(|_| {
        Problem::bad_request(format!("{what} id '{raw}' is not a number"))
            .field("{id}", "not a number")
    })
}

/// The query string as `T` (unknown parameters refused by `T`'s serde attributes).
pub(crate) fn query<T: DeserializeOwned>(uri: &Uri) -> Result<T, Problem> {
    let q = uri.query().unwrap_or("");
    serde_urlencoded::from_str(q).map_err(|e| {
        let msg = e.to_string();
        let field = msg
            .strip_prefix("unknown field `")
            .and_then(|r| r.split('`').next())
            .map(|f| format!("?{f}"))
            .unwrap_or_else(|| "?".into());
        Problem::bad_request(format!("bad query string: {msg}")).field(field, msg)
    })
}

/// A numeric query parameter `?{name}`, refused by name when it is not a number.
pub(crate) fn number<T: From<i64>>(name: &str, raw: Option<&str>) -> Result<Option<T>, Problem> {
    raw.map(|r| {
        r.parse::<i64>().map(T::from).map_err(|_| {
            let msg = format!("'{r}' is not a number");
            Problem::bad_request(format!("?{name}: {msg}")).field(format!("?{name}"), msg)
        })
    })
    .transpose()
}

/// `?limit`: 1..=MAX_PAGE, DEFAULT_LIMIT when absent.
pub(crate) fn limit(raw: Option<&str>) -> Result<u32, Problem> {
    let Some(raw) = raw else {
        return Ok(DEFAULT_LIMIT);
    };
    match raw.parse::<u32>() {
        Ok(n) if (1..=tasker_store::MAX_PAGE).contains(&n) => Ok(n),
        _ => {
            let msg = format!(
                "'{raw}' is not a page size within 1..={}",
                tasker_store::MAX_PAGE
            );
            Err(Problem::bad_request(format!("?limit: {msg}")).field("?limit", msg))
        }
    }
}

/// An RFC 3339 instant in a query parameter.
pub(crate) fn instant(name: &str, raw: Option<&str>) -> Result<Option<DateTime<Utc>>, Problem> {
    raw.map(|r| {
        DateTime::parse_from_rfc3339(r)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| {
                let msg = format!("'{r}' is not an RFC 3339 instant ({e})");
                Problem::bad_request(format!("?{name}: {msg}")).field(format!("?{name}"), msg)
            })
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_checked_by_name() {
        assert_eq!(limit(None).unwrap(), DEFAULT_LIMIT);
        assert_eq!(limit(Some("500")).unwrap(), 500);
        for bad in ["0", "501", "x", "-1"] {
            let e = limit(Some(bad)).unwrap_err();
            assert_eq!(e.errors[0].pointer, "?limit", "{e:?}");
        }
        let e = instant("created_after", Some("yesterday")).unwrap_err();
        assert_eq!(e.errors[0].pointer, "?created_after");
        assert!(
            instant("x", Some("2026-01-02T03:04:05Z"))
                .unwrap()
                .is_some()
        );
    }
}
