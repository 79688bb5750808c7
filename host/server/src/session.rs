//! The web page's sign-in: a token kept in an HttpOnly, SameSite=Strict cookie, which the
//! API accepts as it accepts a bearer token, and the CSRF rules that every state-changing
//! request passes (checked by `auth::authorize`).
//!
//! A request authenticated by the cookie that changes anything must carry `X-CSRF-Token`
//! with [`csrf_token`] of the cookie's token: a keyed hash, so that every server instance
//! checks it with no shared state, and that another site, which cannot read our pages,
//! cannot know it. A browser request from another origin is refused outright, credentials
//! or not, which also protects a server with authentication off.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use cookie::{Cookie, SameSite};
use serde::{Deserialize, Serialize};
use tasker_store::{Store, StoreError, TokenRow};
use utoipa::ToSchema;

use crate::auth::{Caller, Permission, bearer, hash_secret, same_hash};
use crate::body::StrictJson;
use crate::openapi::{BadRequest, Invalid};
use crate::problem::Problem;
use crate::state::AppState;

/// The cookie holding the signed-in token.
pub const COOKIE: &str = "tasker_session";
/// The header a cookie-authenticated change carries.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The CSRF token of a session's token secret.
pub fn csrf_token(secret: &str) -> String {
    blake3::derive_key("tasker 2026-12-03 web page csrf token", secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The token secret in the request's session cookie.
pub fn cookie_secret(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == COOKIE && !c.value().is_empty())
        .map(|c| c.value().to_owned())
}

/// GET, HEAD and OPTIONS change nothing.
pub fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Why a state-changing request is refused as coming from another site: a browser says so
/// (`Sec-Fetch-Site`), or its `Origin` is not this server. Clients other than browsers send
/// neither header and pass.
pub fn cross_site(headers: &HeaderMap) -> Option<String> {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    if let Some(site) = text("sec-fetch-site")
        && site != "same-origin"
        && site != "none"
    {
        return Some(format!(
            "a request from another site (Sec-Fetch-Site: {site}) may not change anything"
        ));
    }
    let origin = text("origin")?;
    let host = text("x-forwarded-host").or_else(|| text("host"));
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    if authority.is_some() && authority == host {
        return None;
    }
    Some(format!(
        "a request from the origin {origin} may not change anything on {}",
        host.unwrap_or("this server")
    ))
}

/// Whether a cookie-authenticated change carries the session's CSRF token.
pub fn csrf_ok(headers: &HeaderMap, secret: &str) -> bool {
    let Some(sent) = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    same_hash(sent, &csrf_token(secret))
}

/// Who is signed in, and what the page may offer them.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    /// False when the server runs without authentication (every action is allowed).
    pub auth: bool,
    /// The token's name (None with authentication off).
    pub token: Option<String>,
    /// Every permission held, wildcards expanded.
    pub permissions: Vec<String>,
    /// What to send as `X-CSRF-Token` with every change.
    pub csrf: String,
}

fn session_view(state: &AppState, caller: &Caller, secret: &str) -> SessionView {
    SessionView {
        auth: state.auth_enabled(),
        token: caller.token.clone(),
        permissions: Permission::ALL
            .iter()
            .filter(|p| caller.may(**p))
            .map(|p| p.as_str().to_owned())
            .collect(),
        csrf: csrf_token(secret),
    }
}

/// `GET /ui/session`: the caller, as the page sees it: signed in by the cookie or a bearer
/// token, or not signed in (no token, no permission; a 200, so that a visit before
/// signing in is no error).
#[utoipa::path(
    get,
    path = "/ui/session",
    operation_id = "show_session",
    tag = "session",
    responses((status = 200, description = "The caller", body = SessionView))
)]
pub async fn show(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if !state.auth_enabled() {
        return Json(session_view(&state, &Caller::anyone(), "")).into_response();
    }
    let row = match bearer(&headers).or_else(|| cookie_secret(&headers)) {
        None => None,
        Some(secret) => match valid_token(&state, &secret).await {
            Ok(row) => row.map(|r| (r, secret)),
            Err(e) => return Problem::from(e).into_response(),
        },
    };
    let view = match row {
        Some((row, secret)) => {
            let caller = Caller {
                token: Some(row.name),
                grants: row.permissions,
            };
            session_view(&state, &caller, &secret)
        }
        None => SessionView {
            auth: true,
            token: None,
            permissions: Vec::new(),
            csrf: String::new(),
        },
    };
    let mut res = Json(view).into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// A sign-in: the token's secret.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    pub token: String,
}

/// The valid token of this secret (None: unknown, revoked or expired).
pub(crate) async fn valid_token(
    state: &AppState,
    secret: &str,
) -> Result<Option<TokenRow>, StoreError> {
    let hash = hash_secret(secret);
    let row = state.store().token_by_hash(&hash).await?;
    Ok(row.filter(|row| same_hash(&row.hash, &hash) && row.is_valid_at(state.now())))
}

/// `POST /ui/session`: signs in with a token, kept in the session cookie (HttpOnly,
/// SameSite=Strict) until it expires or `DELETE /ui/session`.
#[utoipa::path(
    post,
    path = "/ui/session",
    operation_id = "sign_in",
    tag = "session",
    request_body = SignIn,
    responses(
        (status = 200, description = "Signed in; the answer sets the session cookie",
            body = SessionView),
        (status = 400, response = BadRequest),
        (status = 422, response = Invalid),
    )
)]
pub async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    StrictJson(body): StrictJson<SignIn>,
) -> Response {
    let secret = body.token.trim();
    if !state.auth_enabled() {
        return Json(session_view(&state, &Caller::anyone(), "")).into_response();
    }
    if secret.is_empty() {
        return Problem::invalid("the token is empty")
            .field("/token", "empty")
            .into_response();
    }
    let row = match valid_token(&state, secret).await {
        Ok(Some(row)) => row,
        Ok(None) => {
            let msg = "the token is unknown, revoked or expired";
            return Problem::invalid(msg).field("/token", msg).into_response();
        }
        Err(e) => return Problem::from(e).into_response(),
    };
    let mut cookie = Cookie::build((COOKIE, secret.to_owned()))
        .http_only(true)
        .same_site(SameSite::Strict)
        .path("/")
        .secure(behind_https(&headers));
    if let Some(expiry) = row.expires_at {
        let left = (expiry - state.now()).num_seconds().max(0);
        cookie = cookie.max_age(cookie::time::Duration::seconds(left));
    }
    let caller = Caller {
        token: Some(row.name),
        grants: row.permissions,
    };
    let view = session_view(&state, &caller, secret);
    with_cookie(Json(view).into_response(), &cookie.build())
}

/// What a sign-out did.
#[derive(Debug, Serialize, ToSchema)]
pub struct SignedOut {
    /// Always true: the answer clears the cookie, signed in or not.
    pub signed_out: bool,
}

/// `DELETE /ui/session`: signs out (the cookie is cleared).
#[utoipa::path(
    delete,
    path = "/ui/session",
    operation_id = "sign_out",
    tag = "session",
    responses((status = 200, description = "Signed out; the answer clears the cookie",
        body = SignedOut))
)]
pub async fn sign_out(headers: HeaderMap) -> Response {
    let cookie = Cookie::build((COOKIE, ""))
        .http_only(true)
        .same_site(SameSite::Strict)
        .path("/")
        .secure(behind_https(&headers))
        .max_age(cookie::time::Duration::ZERO)
        .build();
    with_cookie(
        Json(SignedOut { signed_out: true }).into_response(),
        &cookie,
    )
}

/// The page was reached over TLS (a terminating proxy says so): the cookie is `Secure`.
fn behind_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"))
}

fn with_cookie(mut res: Response, cookie: &Cookie<'_>) -> Response {
    if let Ok(v) = HeaderValue::from_str(&cookie.to_string()) {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let h = headers(&[("cookie", "a=1; tasker_session=tkr_x; b=2")]);
        assert_eq!(cookie_secret(&h).as_deref(), Some("tkr_x"));
        let h = headers(&[("cookie", "a=1"), ("cookie", "tasker_session=tkr_y")]);
        assert_eq!(cookie_secret(&h).as_deref(), Some("tkr_y"));
        assert_eq!(
            cookie_secret(&headers(&[("cookie", "tasker_session=")])),
            None
        );
        assert_eq!(cookie_secret(&HeaderMap::new()), None);
    }

    #[test]
    fn csrf_tokens_depend_on_the_secret_and_are_checked() {
        assert_eq!(csrf_token("a"), csrf_token("a"));
        assert_ne!(csrf_token("a"), csrf_token("b"));
        assert_eq!(csrf_token("a").len(), 64);
        let ok = headers(&[("x-csrf-token", &csrf_token("tkr_1"))]);
        assert!(csrf_ok(&ok, "tkr_1"));
        assert!(!csrf_ok(&ok, "tkr_2"));
        assert!(!csrf_ok(&HeaderMap::new(), "tkr_1"));
    }

    #[test]
    fn requests_from_other_sites_are_named() {
        let host = ("host", "127.0.0.1:7300");
        assert_eq!(cross_site(&headers(&[host])), None, "no browser headers");
        let same = headers(&[
            host,
            ("origin", "http://127.0.0.1:7300"),
            ("sec-fetch-site", "same-origin"),
        ]);
        assert_eq!(cross_site(&same), None);
        for site in ["cross-site", "same-site"] {
            let e = cross_site(&headers(&[host, ("sec-fetch-site", site)])).unwrap();
            assert!(e.contains(site), "{e}");
        }
        for origin in ["http://evil.test", "null", "http://127.0.0.1:7301"] {
            let e = cross_site(&headers(&[host, ("origin", origin)])).unwrap();
            assert!(e.contains(origin) && e.contains("127.0.0.1:7300"), "{e}");
        }
        let proxied = headers(&[
            host,
            ("x-forwarded-host", "tasker.example"),
            ("origin", "https://tasker.example"),
        ]);
        assert_eq!(cross_site(&proxied), None);
    }
}
