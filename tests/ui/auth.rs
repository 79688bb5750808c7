//! Sign-in with tokens on (`tasker serve`): a wrong token is refused on the sign-in page; a
//! read-only token sees no action button on any page, and a POST forged from the page's own
//! JavaScript is refused (403) with or without the CSRF header; the session cookie is
//! HttpOnly and SameSite=Strict; an admin token sees the actions, and its cookie changes
//! something only with the CSRF header; a request from another site changes nothing, with
//! tokens on or off; signing out clears the cookie.

use serde_json::{Value, json};
use tasker_tests::browser::{Api, Browser, listening};
use tasker_tests::cli::{Db, plugin_dir, run, scratch, stderr, stdout, tasker};

use super::{action_buttons, store_name};

fn create_token(db: &Db, name: &str, permissions: &str) -> String {
    let mut c = tasker(db, &plugin_dir());
    c.args([
        "tokens",
        "create",
        "--name",
        name,
        "--permissions",
        permissions,
        "--expires",
        "1d",
    ]);
    let out = run(c);
    assert!(out.status.success(), "{}", stderr(&out));
    let token = stdout(&out).trim().to_owned();
    assert!(token.starts_with("tkr_"), "{token}");
    token
}

/// `fetch(path, {method: 'POST', credentials: 'same-origin'})` from the page, with the
/// session's CSRF token in `X-CSRF-Token` or not; the answer's status.
async fn forged_post(b: &Browser, path: &str, with_csrf: bool) -> u64 {
    b.js(
        "const [path, withCsrf] = arguments;
         return (async () => {
           const headers = {};
           if (withCsrf) {
             const s = await (await fetch('/ui/session', {credentials: 'same-origin'})).json();
             headers['X-CSRF-Token'] = s.csrf;
           }
           const r = await fetch(path, {method: 'POST', credentials: 'same-origin', headers});
           return r.status;
         })()",
        vec![json!(path), json!(with_csrf)],
    )
    .await
    .as_u64()
    .unwrap_or_default()
}

/// A POST to `path` on `base` sent by a page of another site: `base` with `localhost` for
/// `127.0.0.1` (same server, another origin, and loopback too, so Chromium lets it go). A
/// `no-cors` fetch, as a hostile page would send it: its answer is opaque.
async fn cross_site_post(b: &Browser, base: &str, path: &str) -> String {
    let elsewhere = base.replace("127.0.0.1", "localhost");
    assert_ne!(elsewhere, base, "the server's URL names 127.0.0.1: {base}");
    // A document of that origin without the page's Content-Security-Policy (which would
    // stop the fetch before it left): a JSON answer. Chromium asks that origin for
    // /favicon.ico, which is not there (see FAVICON).
    b.goto(&format!("{elsewhere}/health/live")).await;
    b.js(
        "const [url] = arguments;
         return fetch(url, {method: 'POST', mode: 'no-cors', credentials: 'include'})
           .then(() => 'sent', (e) => String(e))",
        vec![json!(format!("{base}{path}"))],
    )
    .await
    .as_str()
    .unwrap_or_default()
    .to_owned()
}

/// What visiting `/health/live` in a browser logs: no icon at the default place. The test's
/// doing (the web page itself declares its icon), so expected in the console.
const FAVICON: &str =
    "/favicon.ico - Failed to load resource: the server responded with a status of 404";

async fn sign_in(b: &Browser, base: &str, next: &str, token: &str) {
    b.goto(&format!("{base}{next}")).await;
    b.wait_page("sign-in").await;
    b.type_into("form#sign-in input[name=\"token\"]", &format!("{token}\n"))
        .await;
    b.wait_js(
        "the page after signing in, with a sign-out button",
        "return document.body.dataset.page !== 'sign-in' && document.body.dataset.ready === '1'
           && document.querySelector('button[data-action=\"sign-out\"]') !== null",
        vec![],
    )
    .await;
}

async fn sign_out(b: &Browser) {
    b.click("button[data-action=\"sign-out\"]").await;
    b.wait_page("sign-in").await;
}

async fn session_cookie(b: &Browser) -> Option<(Option<bool>, String)> {
    match b.client().get_named_cookie("tasker_session").await {
        Ok(c) if !c.value().is_empty() => Some((c.http_only(), format!("{:?}", c.same_site()))),
        _ => None,
    }
}

async fn read_only_token_sees_no_action_and_forged_posts_are_refused(db: Db) {
    let store = store_name(&db);
    let reader = create_token(
        &db,
        "reader",
        "tasks:read,steps:read,templates:read,plugins:read,hooks:read",
    );
    let admin = create_token(&db, "admin", "*");
    // The API only (no worker): the task submitted below stays pending, cancellable.
    let (_server, base) = listening(&db, &plugin_dir(), "serve", &[]);
    let api = Api::new(&base, Some(&admin));
    // A failed task, run to its end by `tasker run` on the same store.
    let dir = scratch("ui-auth");
    let failing = dir.join("failing.yaml");
    std::fs::write(
        &failing,
        "namespace: ui\nname: guarded\nversion: 1.0.0\nsteps:\n\
         \x20 - { name: charge, handler: fail@0.1.0, config: { mode: permanent } }\n\
         \x20 - { name: ship, handler: noop@0.1.0, depends_on: [charge] }\n",
    )
    .unwrap();
    let mut c = tasker(&db, &plugin_dir());
    c.arg("run").arg(&failing).arg("--plain");
    assert_eq!(run(c).status.code(), Some(1), "the failing task fails");
    let failed = api.get("/v1/tasks?state=error").await["items"][0]["id"]
        .as_i64()
        .expect("the failed task");
    let charge = api.step_id(failed, "charge").await;
    let pending = api.submit("ui/guarded@1.0.0", json!({})).await;
    let cancel = format!("/v1/tasks/{pending}/cancel");

    let b = Browser::start(&format!("auth-{store}")).await;
    // Not signed in: every page asks for a token. A wrong one is refused there.
    b.goto(&format!("{base}/ui/tasks/{pending}")).await;
    b.wait_page("sign-in").await;
    // Well formed, but no such token.
    let unknown = format!("tkr_{}\n", "0".repeat(64));
    b.type_into("form#sign-in input[name=\"token\"]", &unknown)
        .await;
    b.wait_js(
        "#error to say why the token was refused",
        "const e = document.querySelector('#error');
         return e !== null && e.textContent.trim().length > 0 && e.getClientRects().length > 0",
        vec![],
    )
    .await;
    assert!(
        session_cookie(&b).await.is_none(),
        "no cookie for a wrong token"
    );

    // Read-only.
    sign_in(&b, &base, &format!("/ui/tasks/{failed}"), &reader).await;
    let (http_only, same_site) = session_cookie(&b).await.expect("the session cookie");
    assert_eq!(http_only, Some(true), "the session cookie is HttpOnly");
    assert_eq!(
        same_site, "Some(Strict)",
        "the session cookie is SameSite=Strict"
    );
    let visible = b.js("return document.cookie", vec![]).await;
    assert!(
        !visible
            .as_str()
            .unwrap_or_default()
            .contains("tasker_session"),
        "the page's JavaScript cannot read the session: {visible}"
    );
    let who = b
        .js("return fetch('/ui/session').then(r => r.json())", vec![])
        .await;
    assert_eq!(who["auth"], true, "{who}");
    assert_eq!(who["token"], "reader", "{who}");
    assert!(
        !who["permissions"]
            .as_array()
            .unwrap()
            .contains(&json!("tasks:cancel")),
        "{who}"
    );
    for (page, path) in [
        ("task", format!("/ui/tasks/{failed}")),
        ("task", format!("/ui/tasks/{pending}")),
        ("step", format!("/ui/steps/{charge}")),
        ("plugins", "/ui/plugins".to_owned()),
        ("hooks", "/ui/hooks".to_owned()),
        ("tasks", "/ui/tasks".to_owned()),
    ] {
        b.goto(&format!("{base}{path}")).await;
        b.wait_page(page).await;
        if page == "task" {
            b.wait_attr("svg#dag", "data-rendered", "1").await;
        }
        assert_eq!(
            action_buttons(&b).await,
            Vec::<String>::new(),
            "a read-only token sees no action on {path}"
        );
        assert_eq!(
            b.count("form#resolve-form, form#plugin-upload").await,
            0,
            "no action form on {path}"
        );
    }
    assert_eq!(forged_post(&b, &cancel, false).await, 403, "no CSRF header");
    assert_eq!(
        forged_post(&b, &cancel, true).await,
        403,
        "CSRF header, but a read-only token"
    );
    assert_eq!(api.task(pending).await["state"], "pending");

    // Signing out clears the cookie: a reload lands on the sign-in page.
    sign_out(&b).await;
    assert!(session_cookie(&b).await.is_none(), "signed out, no cookie");
    b.goto(&format!("{base}/ui/tasks/{pending}")).await;
    b.wait_page("sign-in").await;
    b.reload().await;
    b.wait_page("sign-in").await;

    // Admin: the actions are there; the cookie alone changes nothing without the header.
    sign_in(&b, &base, &format!("/ui/tasks/{pending}"), &admin).await;
    b.wait_attr("svg#dag", "data-rendered", "1").await;
    let mut actions = action_buttons(&b).await;
    actions.sort();
    assert_eq!(actions, ["cancel", "retry"], "an admin's actions on a task");
    b.goto(&format!("{base}/ui/steps/{charge}")).await;
    b.wait_page("step").await;
    b.wait_for("form#resolve-form button[data-action=\"resolve\"]")
        .await;
    b.goto(&format!("{base}/ui/plugins")).await;
    b.wait_page("plugins").await;
    b.wait_for("form#plugin-upload button[data-action=\"upload\"]")
        .await;

    // From another site (http://localhost:<port> is another origin and another site than
    // http://127.0.0.1:<port>), with the admin's cookie in the jar: nothing changes.
    assert_eq!(
        cross_site_post(&b, &base, &cancel).await,
        "sent",
        "the cross-site POST left the browser"
    );
    assert_eq!(
        api.task(pending).await["state"],
        "pending",
        "a cross-site POST changed nothing"
    );

    b.goto(&format!("{base}/ui/tasks/{pending}")).await;
    b.wait_page("task").await;
    assert_eq!(forged_post(&b, &cancel, false).await, 403, "no CSRF header");
    assert_eq!(api.task(pending).await["state"], "pending");
    assert_eq!(forged_post(&b, &cancel, true).await, 200, "with the header");
    // The page hears of it live.
    b.wait_attr("#task-state", "data-state", "cancelled").await;
    let task: Value = api.task(pending).await;
    assert_eq!(task["state"], "cancelled");

    sign_out(&b).await;
    let status = b
        .js(
            "return fetch('/v1/tasks', {credentials: 'same-origin'}).then(r => r.status)",
            vec![],
        )
        .await;
    assert_eq!(status, json!(401), "signed out, the API refuses the page");
    b.assert_no_console_errors(&[
        // What this test provoked on purpose: the wrong token, the forged POSTs, and the
        // request after signing out.
        // (A wrong token is a 422 of POST /ui/session, naming the field.)
        "/ui/session - Failed to load resource: the server responded with a status of 422",
        &format!("{cancel} - Failed to load resource: the server responded with a status of 403"),
        "/v1/tasks - Failed to load resource: the server responded with a status of 401",
        FAVICON,
    ])
    .await;
    b.close().await;
}

/// With auth off (a development server on loopback) the page's own origin may act, another
/// site may not.
async fn a_cross_site_post_changes_nothing_with_auth_off(db: Db) {
    let store = store_name(&db);
    let (_server, base) = listening(&db, &plugin_dir(), "serve", &["--no-auth"]);
    let api = Api::new(&base, None);
    api.register(
        "namespace: ui\nname: open\nversion: 1.0.0\nsteps:\n  - { name: only, handler: noop@0.1.0 }\n",
    )
    .await;
    let first = api.submit("ui/open@1.0.0", json!({})).await;
    let second = api.submit("ui/open@1.0.0", json!({})).await;

    let b = Browser::start(&format!("cross_site-{store}")).await;
    let cancel = format!("/v1/tasks/{first}/cancel");
    assert_eq!(cross_site_post(&b, &base, &cancel).await, "sent");
    assert_eq!(
        api.task(first).await["state"],
        "pending",
        "a POST from another site changed nothing"
    );
    // The same request from the page's own origin is allowed: the refusal above was the
    // origin's doing.
    b.goto(&format!("{base}/ui/tasks/{second}")).await;
    b.wait_page("task").await;
    let own = format!("/v1/tasks/{second}/cancel");
    assert_eq!(forged_post(&b, &own, false).await, 200);
    b.wait_attr("#task-state", "data-state", "cancelled").await;
    b.assert_no_console_errors(&[
        &format!("{cancel} - Failed to load resource: the server responded with a status of 403"),
        FAVICON,
    ])
    .await;
    b.close().await;
}

tasker_tests::cli_on_both_backends!(
    read_only_token_sees_no_action_and_forged_posts_are_refused,
    a_cross_site_post_changes_nothing_with_auth_off,
);
