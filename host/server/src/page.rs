//! The web page's files: the HTML shell at every page URL and its assets under
//! `/ui/assets/`, embedded in the binary from `host/server/ui/` (docs/ui.md). The page reads
//! everything else from the API, so these routes are public and change nothing.

use std::borrow::Cow;
use std::path::{Component, Path, PathBuf};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::problem::Problem;
use crate::state::AppState;

#[derive(rust_embed::Embed)]
#[folder = "ui/"]
struct Assets;

/// Every URL that answers the page (the front end routes on the path).
pub const PAGES: &[&str] = &[
    "/",
    "/ui",
    "/ui/tasks",
    "/ui/tasks/{id}",
    "/ui/steps/{id}",
    "/ui/templates",
    "/ui/templates/{namespace}/{name}/{version}",
    "/ui/plugins",
    "/ui/hooks",
    "/ui/health",
    "/ui/sign-in",
];

/// The shell's file.
const SHELL: &str = "index.html";

/// No script or style from elsewhere, none inline, no framing.
const CSP: &str = "default-src 'self'; img-src 'self' data:; object-src 'none'; \
                   base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The page's routes.
pub(crate) fn router(state: AppState) -> Router {
    let mut r = Router::new();
    for page in PAGES {
        r = r.route(page, get(shell));
    }
    r.route("/ui/assets/{*file}", get(asset)).with_state(state)
}

async fn shell(State(state): State<AppState>, headers: HeaderMap) -> Response {
    file(&state, SHELL, &headers)
}

async fn asset(State(state): State<AppState>, uri: Uri, headers: HeaderMap) -> Response {
    let name = uri.path().trim_start_matches("/ui/assets/");
    if name == SHELL {
        return Problem::not_found(format!("no asset {name}")).into_response();
    }
    file(&state, name, &headers)
}

/// One file, from `ui_dir` when configured, else embedded; revalidated by its hash.
fn file(state: &AppState, name: &str, headers: &HeaderMap) -> Response {
    let Some(rel) = relative(name) else {
        return Problem::not_found(format!("no asset {name}")).into_response();
    };
    // Embedded files carry the hash computed at compile time; files from disk are hashed
    // as read (a development setting).
    let (body, hash): (Cow<'static, [u8]>, String) = match &state.config().ui_dir {
        Some(dir) => match std::fs::read(dir.join(&rel)) {
            Ok(b) => {
                let hash = blake3::hash(&b).to_hex()[..32].to_owned();
                (Cow::Owned(b), hash)
            }
            Err(_) => return Problem::not_found(format!("no asset {name}")).into_response(),
        },
        None => match Assets::get(name) {
            Some(f) => {
                let hash = f.metadata.sha256_hash()[..16]
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                (f.data, hash)
            }
            None => return Problem::not_found(format!("no asset {name}")).into_response(),
        },
    };
    let etag = format!("\"{hash}\"");
    let mut res = if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
    {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        body.into_response()
    };
    let h = res.headers_mut();
    let mime = mime_guess::from_path(&rel).first_or_octet_stream();
    let mime = match mime.type_() {
        mime_guess::mime::TEXT | mime_guess::mime::APPLICATION
            if mime.get_param("charset").is_none() && is_text(&rel) =>
        {
            format!("{mime}; charset=utf-8")
        }
        _ => mime.to_string(),
    };
    let mut set = |k, v: &str| {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(k, v);
        }
    };
    set(header::CONTENT_TYPE, &mime);
    set(header::ETAG, &etag);
    // Always revalidated: a new binary serves new files under the same names.
    set(header::CACHE_CONTROL, "no-cache");
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(header::REFERRER_POLICY, "no-referrer");
    if name == SHELL {
        set(header::CONTENT_SECURITY_POLICY, CSP);
        set(header::X_FRAME_OPTIONS, "DENY");
    }
    res
}

fn is_text(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("html" | "css" | "js" | "svg" | "json" | "txt")
    )
}

/// `name` as a path inside the asset directory (None: it would leave it).
fn relative(name: &str) -> Option<PathBuf> {
    let p = Path::new(name);
    let inside = !name.is_empty()
        && p.components()
            .all(|c| matches!(c, Component::Normal(s) if !s.to_string_lossy().starts_with('.')));
    inside.then(|| p.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asset_names_stay_inside_the_directory() {
        assert_eq!(relative("app.js"), Some(PathBuf::from("app.js")));
        assert_eq!(
            relative("pages/task.js"),
            Some(PathBuf::from("pages/task.js"))
        );
        for bad in ["", "../Cargo.toml", "/etc/passwd", "a/../../b", ".hidden"] {
            assert_eq!(relative(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_shell_is_embedded() {
        assert!(
            Assets::get(SHELL).is_some(),
            "host/server/ui/{SHELL} is missing"
        );
    }
}
