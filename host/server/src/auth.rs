//! Bearer tokens and `resource:action` permissions. A token is shown once when created; the
//! store keeps the blake3 hash of it, so a lookup by hash reveals nothing and the final
//! comparison is constant-time.

use std::fmt;
use std::str::FromStr;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use chrono::{DateTime, Utc};
use tasker_store::{NewToken, Store, StoreError, TokenRow};

use crate::problem::Problem;
use crate::routes::{self, Access};
use crate::session;
use crate::state::AppState;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Permission {
    TemplatesRead,
    TemplatesWrite,
    TasksRead,
    TasksCreate,
    TasksCancel,
    TasksRetry,
    StepsRead,
    StepsResolve,
    PluginsRead,
    PluginsWrite,
    HooksRead,
    HooksRedeliver,
    MetricsRead,
    TokensAdmin,
    SchedulesRead,
    SchedulesWrite,
}

impl Permission {
    pub const ALL: [Permission; 16] = [
        Permission::TemplatesRead,
        Permission::TemplatesWrite,
        Permission::TasksRead,
        Permission::TasksCreate,
        Permission::TasksCancel,
        Permission::TasksRetry,
        Permission::StepsRead,
        Permission::StepsResolve,
        Permission::PluginsRead,
        Permission::PluginsWrite,
        Permission::HooksRead,
        Permission::HooksRedeliver,
        Permission::MetricsRead,
        Permission::TokensAdmin,
        Permission::SchedulesRead,
        Permission::SchedulesWrite,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::TemplatesRead => "templates:read",
            Permission::TemplatesWrite => "templates:write",
            Permission::TasksRead => "tasks:read",
            Permission::TasksCreate => "tasks:create",
            Permission::TasksCancel => "tasks:cancel",
            Permission::TasksRetry => "tasks:retry",
            Permission::StepsRead => "steps:read",
            Permission::StepsResolve => "steps:resolve",
            Permission::PluginsRead => "plugins:read",
            Permission::PluginsWrite => "plugins:write",
            Permission::HooksRead => "hooks:read",
            Permission::HooksRedeliver => "hooks:redeliver",
            Permission::MetricsRead => "metrics:read",
            Permission::TokensAdmin => "tokens:admin",
            Permission::SchedulesRead => "schedules:read",
            Permission::SchedulesWrite => "schedules:write",
        }
    }

    fn resource(self) -> &'static str {
        self.as_str().split(':').next().unwrap_or_default()
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Permission {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Permission::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown permission '{s}'"))
    }
}

/// Checks a token's permission list as given: each a permission, `resource:*` or `*`.
pub fn check_grants<S: AsRef<str>>(grants: &[S]) -> Result<(), String> {
    if grants.is_empty() {
        return Err("a token needs at least one permission".into());
    }
    for g in grants {
        let g = g.as_ref();
        let known = g == "*"
            || g.parse::<Permission>().is_ok()
            || g.strip_suffix(":*")
                .is_some_and(|r| Permission::ALL.iter().any(|p| p.resource() == r));
        if !known {
            let all: Vec<&str> = Permission::ALL.iter().map(|p| p.as_str()).collect();
            return Err(format!(
                "unknown permission '{g}' (known: {}, resource:* or *)",
                all.join(", ")
            ));
        }
    }
    Ok(())
}

/// Whether a token's grants include `p`.
pub fn grants_allow<S: AsRef<str>>(grants: &[S], p: Permission) -> bool {
    grants.iter().any(|g| {
        let g = g.as_ref();
        g == "*" || g == p.as_str() || g.strip_suffix(":*") == Some(p.resource())
    })
}

/// A new token's secret: `tkr_` and 64 hex digits (256 random bits).
pub fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    let mut s = String::with_capacity(68);
    s.push_str("tkr_");
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// What the store keeps of a secret.
pub fn hash_secret(secret: &str) -> String {
    blake3::hash(secret.as_bytes()).to_hex().to_string()
}

/// Why a token was not issued.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum TokenError {
    /// `field` is the request's JSON pointer (`/name`, `/permissions`, `/expires_at`).
    #[error("{message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<TokenError> for Problem {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::Invalid { field, message } => {
                Problem::invalid(message.clone()).field(field, message)
            }
            TokenError::Store(e) => e.into(),
        }
    }
}

/// Checks and stores a new token; returns its row and its secret (shown once). The CLI's
/// `tokens create` and `POST /v1/tokens` both issue through here.
pub async fn issue<S: Store>(
    store: &S,
    name: &str,
    permissions: Vec<String>,
    expires_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<(TokenRow, String), TokenError> {
    let invalid = |field, message: String| TokenError::Invalid { field, message };
    if name.trim().is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(invalid(
            "/name",
            format!("token name {name:?} is not 1 to 64 printable characters"),
        ));
    }
    check_grants(&permissions).map_err(|m| invalid("/permissions", m))?;
    if let Some(t) = expires_at
        && t <= now
    {
        return Err(invalid(
            "/expires_at",
            format!("the expiry {t} is not in the future"),
        ));
    }
    let secret = new_secret();
    let row = store
        .create_token(
            &NewToken {
                name: name.to_owned(),
                hash: hash_secret(&secret),
                permissions,
                expires_at,
            },
            now,
        )
        .await?;
    Ok((row, secret))
}

/// Who called: set by [`authorize`] for the handlers (None when auth is off).
#[derive(Debug, Clone)]
pub struct Caller {
    pub token: Option<String>,
    pub grants: Vec<String>,
}

impl Caller {
    /// Anyone, when authentication is off.
    pub fn anyone() -> Caller {
        Caller {
            token: None,
            grants: vec!["*".into()],
        }
    }

    pub fn may(&self, p: Permission) -> bool {
        self.token.is_none() || grants_allow(&self.grants, p)
    }
}

/// The middleware in front of every route: refuses changes asked by another site, finds
/// the route's access rule and checks the caller's token against it: a bearer token, or the
/// web page's session cookie (whose changes must carry its CSRF token, see `session.rs`).
pub async fn authorize(
    State(state): State<AppState>,
    matched: Option<MatchedPath>,
    mut req: Request,
    next: Next,
) -> Response {
    let path = matched.as_ref().map(|m| m.as_str()).unwrap_or("");
    let Some(access) = routes::access(req.method(), path) else {
        return Problem::internal(format!("no access rule for {} {path}", req.method()))
            .into_response();
    };
    let safe = session::is_safe(req.method());
    if !safe && let Some(why) = session::cross_site(req.headers()) {
        return Problem::forbidden(why).into_response();
    }
    // `metrics:read` is waived when the operator made the metrics public (a scraper
    // without a token).
    let public_metrics =
        access == Access::Need(Permission::MetricsRead) && state.config().public_metrics;
    if matches!(access, Access::Public) || public_metrics {
        return next.run(req).await;
    }
    if !state.auth_enabled() {
        req.extensions_mut().insert(Caller::anyone());
        return next.run(req).await;
    }
    let secret = match bearer(req.headers()) {
        Some(secret) => secret,
        None => match session::cookie_secret(req.headers()) {
            Some(secret) => {
                if !safe && !session::csrf_ok(req.headers(), &secret) {
                    return Problem::forbidden(format!(
                        "a change made with the session cookie needs the header {} \
                         (GET /ui/session gives it)",
                        session::CSRF_HEADER
                    ))
                    .into_response();
                }
                secret
            }
            None => {
                return unauthorized(
                    "this route needs a token: send Authorization: Bearer <token>",
                );
            }
        },
    };
    let row = match session::valid_token(&state, &secret).await {
        Ok(Some(row)) => row,
        Ok(None) => return unauthorized("the token is unknown, revoked or expired"),
        Err(e) => return Problem::from(e).into_response(),
    };
    if let Access::Need(p) = access
        && !grants_allow(&row.permissions, p)
    {
        return Problem::forbidden(format!("the token '{}' lacks the permission {p}", row.name))
            .with("missing_permission", p.as_str().into())
            .into_response();
    }
    req.extensions_mut().insert(Caller {
        token: Some(row.name),
        grants: row.permissions,
    });
    next.run(req).await
}

/// The secret of an `Authorization: Bearer` header.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

pub(crate) fn unauthorized(detail: &str) -> Response {
    let mut res = Problem::unauthorized(detail).into_response();
    res.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"tasker\""),
    );
    res
}

/// Constant-time equality of two hex hashes.
pub(crate) fn same_hash(stored: &str, computed: &str) -> bool {
    match (
        blake3::Hash::from_hex(stored),
        blake3::Hash::from_hex(computed),
    ) {
        // blake3::Hash's equality is constant-time.
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_match_exactly_by_resource_or_all() {
        let g = ["tasks:read", "steps:*"];
        assert!(grants_allow(&g, Permission::TasksRead));
        assert!(!grants_allow(&g, Permission::TasksCreate));
        assert!(grants_allow(&g, Permission::StepsResolve));
        assert!(grants_allow(&["*"], Permission::TokensAdmin));
        assert!(!grants_allow::<&str>(&[], Permission::TasksRead));
    }

    #[test]
    fn grant_lists_are_checked() {
        check_grants(&["tasks:read", "hooks:*", "*"]).unwrap();
        let e = check_grants(&["tasks:reed"]).unwrap_err();
        assert!(e.contains("unknown permission 'tasks:reed'"), "{e}");
        assert!(check_grants(&["nope:*"]).is_err());
        assert!(check_grants::<&str>(&[]).is_err());
        for p in Permission::ALL {
            assert_eq!(p.as_str().parse::<Permission>(), Ok(p));
        }
    }

    #[test]
    fn secrets_are_random_and_hashed() {
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a, b);
        assert!(a.starts_with("tkr_") && a.len() == 68, "{a}");
        let h = hash_secret(&a);
        assert!(same_hash(&h, &hash_secret(&a)));
        assert!(!same_hash(&h, &hash_secret(&b)));
        assert!(!same_hash("zz", &h));
    }
}
