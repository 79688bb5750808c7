//! `tasker serve`: Tasker's HTTP API (axum). Stateless: every answer comes from the store, so
//! several servers can share one PostgreSQL database behind a load balancer.
//!
//! The route table (`routes.rs`) lists every route with its access rule; `auth.rs` checks
//! bearer tokens against it; handlers (`handlers/`) answer JSON views (`views.rs`) or RFC 9457
//! problems (`problem.rs`). `openapi.rs` describes it all as OpenAPI 3.1, at `/openapi.json`.
//! The web page (`page.rs`, files in `ui/`) is served at `/` and signs in through
//! `session.rs` (docs/ui.md).

pub mod auth;
pub mod body;
pub mod handlers;
pub mod metrics;
pub mod openapi;
pub mod page;
pub mod problem;
pub mod routes;
pub mod session;
pub mod state;
pub mod views;

use std::future::Future;
use std::net::SocketAddr;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{Method, Uri};

pub use auth::{Permission, TokenError, issue as issue_token};
pub use problem::Problem;
pub use state::{AppState, AuthMode, ServerConfig};

/// The address `tasker serve` listens on by default.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7300";

/// The whole API as one router.
pub fn app(state: AppState) -> Router {
    let limit = state.config().max_body_bytes;
    routes::router(state)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
}

async fn not_found(uri: Uri) -> Problem {
    Problem::not_found(format!("no route {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> Problem {
    Problem::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// Serves `state` on `listener` until `shutdown` resolves, then finishes the requests in
/// flight (graceful shutdown); open event streams end at once.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let closing = state.closing().clone();
    let shutdown = async move {
        shutdown.await;
        closing.cancel();
    };
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// A server without authentication may only listen on a loopback address, unless the
/// operator insists (`--insecure-no-auth`).
pub fn check_listen(addr: SocketAddr, auth: AuthMode, insecure: bool) -> Result<(), String> {
    if auth == AuthMode::Disabled && !addr.ip().is_loopback() && !insecure {
        return Err(format!(
            "refusing to listen on {addr} without authentication: it is not a loopback address \
             (use tokens, or --insecure-no-auth if the network is trusted)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_auth_is_refused_off_loopback() {
        let lo: SocketAddr = "127.0.0.1:7300".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:7300".parse().unwrap();
        assert!(check_listen(lo, AuthMode::Disabled, false).is_ok());
        assert!(check_listen(any, AuthMode::Tokens, false).is_ok());
        let e = check_listen(any, AuthMode::Disabled, false).unwrap_err();
        assert!(
            e.contains("0.0.0.0:7300") && e.contains("--insecure-no-auth"),
            "{e}"
        );
        assert!(check_listen(any, AuthMode::Disabled, true).is_ok());
    }

    #[test]
    fn every_route_has_one_access_rule() {
        for r in routes::ROUTES {
            let m: Method = r.method.to_ascii_uppercase().parse().unwrap();
            assert_eq!(routes::access(&m, r.path), Some(r.access), "{r:?}");
            let same = routes::ROUTES
                .iter()
                .filter(|o| o.path == r.path && o.method == r.method)
                .count();
            assert_eq!(same, 1, "{r:?} is listed twice");
        }
    }
}
