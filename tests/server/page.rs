//! The web page's side of the server: its files, the sign-in cookie, the CSRF rules, and the
//! two reads it adds (counts by state, a task's attempts). The page itself runs in a real
//! browser in the `ui` suite.

use std::time::Duration;

use reqwest::header::{COOKIE, SET_COOKIE};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tasker_tests::Backend;
use tasker_tests::on_both_backends;
use tasker_tests::server::{TestServer, With};

on_both_backends!(
    the_page_and_its_assets_are_served_with_a_strict_policy,
    signing_in_keeps_the_token_in_an_http_only_strict_cookie,
    changes_made_with_the_cookie_need_the_csrf_token,
    counts_by_state_and_a_tasks_attempts,
);

const BOUND: Duration = Duration::from_secs(120);

async fn raw(
    srv: &TestServer,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> reqwest::Response {
    let mut req = srv.client.request(method, format!("{}{path}", srv.base));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    req.send().await.expect("the server answers")
}

fn header(res: &reqwest::Response, name: &str) -> String {
    res.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

async fn the_page_and_its_assets_are_served_with_a_strict_policy<S: Backend>(store: S) {
    let srv = TestServer::start(store.any(), With::ApiOnly).await;
    // Every page URL answers the shell, without a token (it reads the API itself).
    for page in tasker_server::page::PAGES {
        let path = page
            .replace("{id}", "1")
            .replace("{namespace}", "api")
            .replace("{name}", "chain")
            .replace("{version}", "1.0.0");
        let res = raw(&srv, Method::GET, &path, &[], None).await;
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        assert_eq!(header(&res, "content-type"), "text/html; charset=utf-8");
        let csp = header(&res, "content-security-policy");
        assert!(
            csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{path}: {csp}"
        );
        assert_eq!(header(&res, "x-frame-options"), "DENY");
        let html = res.text().await.unwrap();
        assert!(html.contains("/ui/assets/app.js"), "{path}: {html}");
        // Nothing from elsewhere.
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "{html}"
        );
    }
    let js = raw(&srv, Method::GET, "/ui/assets/app.js", &[], None).await;
    assert_eq!(js.status(), StatusCode::OK);
    assert_eq!(
        header(&js, "content-type"),
        "text/javascript; charset=utf-8"
    );
    assert_eq!(header(&js, "x-content-type-options"), "nosniff");
    // Revalidated by its hash.
    let etag = header(&js, "etag");
    assert!(etag.len() > 2, "{etag}");
    let again = raw(
        &srv,
        Method::GET,
        "/ui/assets/app.js",
        &[("if-none-match", &etag)],
        None,
    )
    .await;
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    for missing in [
        "/ui/assets/nothing.js",
        "/ui/assets/%2e%2e/Cargo.toml",
        "/ui/assets/..%2fCargo.toml",
        "/ui/assets/index.html",
        "/ui/nothing",
        "/ui/tasks/1/more",
    ] {
        let res = raw(&srv, Method::GET, missing, &[], None).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{missing}");
        assert_eq!(header(&res, "content-type"), "application/problem+json");
    }
    srv.stop().await;
}

async fn signing_in_keeps_the_token_in_an_http_only_strict_cookie<S: Backend>(store: S) {
    let srv = TestServer::start(store.any(), With::ApiOnly).await;
    let reader = srv.token(&["tasks:read", "steps:*"]).await;
    let sign_in = |token: &str| json!({ "token": token });

    // A wrong token sets nothing.
    for bad in ["tkr_nope", "   "] {
        let res = raw(&srv, Method::POST, "/ui/session", &[], Some(&sign_in(bad))).await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        assert!(res.headers().get(SET_COOKIE).is_none(), "{res:?}");
        let problem: Value = res.json().await.unwrap();
        assert_eq!(problem["errors"][0]["pointer"], "/token", "{problem}");
    }
    let res = raw(
        &srv,
        Method::POST,
        "/ui/session",
        &[],
        Some(&json!({"token": reader, "extra": 1})),
    )
    .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST, "unknown field");

    let res = raw(
        &srv,
        Method::POST,
        "/ui/session",
        &[],
        Some(&sign_in(&reader)),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let set = header(&res, "set-cookie");
    assert!(
        set.starts_with(&format!("tasker_session={reader}")),
        "{set}"
    );
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attr), "{attr} missing: {set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP: {set}");
    assert_eq!(header(&res, "cache-control"), "no-store");
    let session: Value = res.json().await.unwrap();
    assert_eq!(session["auth"], true);
    assert!(
        session["token"].as_str().unwrap().starts_with('t'),
        "{session}"
    );
    assert_eq!(
        session["permissions"],
        json!(["tasks:read", "steps:read", "steps:resolve"]),
        "wildcards expanded"
    );
    let csrf = session["csrf"].as_str().unwrap().to_owned();
    assert_eq!(csrf, tasker_server::session::csrf_token(&reader));

    // The cookie is a credential for the API, with the token's permissions.
    let cookie = format!("tasker_session={reader}");
    let ok = raw(&srv, Method::GET, "/v1/tasks", &[("cookie", &cookie)], None).await;
    assert_eq!(ok.status(), StatusCode::OK);
    let denied = raw(
        &srv,
        Method::GET,
        "/v1/templates",
        &[("cookie", &cookie)],
        None,
    )
    .await;
    assert_eq!(denied.status(), StatusCode::FORBIDDEN);
    let shown = raw(
        &srv,
        Method::GET,
        "/ui/session",
        &[("cookie", &cookie)],
        None,
    )
    .await;
    let shown: Value = shown.json().await.unwrap();
    assert_eq!(shown["csrf"], csrf.as_str());
    assert_eq!(shown["token"], session["token"]);
    // Not signed in: no token, no permission (and no error, for the page's console).
    for headers in [
        vec![],
        vec![("cookie", "tasker_session=tkr_unknown")],
        vec![("authorization", "Bearer tkr_unknown")],
    ] {
        let anonymous = raw(&srv, Method::GET, "/ui/session", &headers, None).await;
        assert_eq!(anonymous.status(), StatusCode::OK);
        let v: Value = anonymous.json().await.unwrap();
        assert_eq!(
            v,
            json!({"auth": true, "token": null, "permissions": [], "csrf": ""}),
            "{headers:?}"
        );
    }
    let by_bearer = raw(
        &srv,
        Method::GET,
        "/ui/session",
        &[("authorization", &format!("Bearer {reader}"))],
        None,
    )
    .await;
    let by_bearer: Value = by_bearer.json().await.unwrap();
    assert_eq!(by_bearer["token"], session["token"]);

    // Behind a TLS proxy the cookie is Secure.
    let res = raw(
        &srv,
        Method::POST,
        "/ui/session",
        &[("x-forwarded-proto", "https")],
        Some(&sign_in(&reader)),
    )
    .await;
    assert!(header(&res, "set-cookie").contains("Secure"));

    // Signing out clears the cookie; a revoked token's cookie stops working.
    let out = raw(
        &srv,
        Method::DELETE,
        "/ui/session",
        &[("cookie", &cookie)],
        None,
    )
    .await;
    assert_eq!(out.status(), StatusCode::OK);
    let cleared = header(&out, "set-cookie");
    assert!(
        cleared.starts_with("tasker_session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    let name = session["token"].as_str().unwrap();
    let revoked = srv
        .call(
            Method::DELETE,
            &format!("/v1/tokens/{name}"),
            Some(&srv.admin.clone()),
            None,
        )
        .await;
    assert!(revoked.status.is_success(), "{revoked:?}");
    let gone = raw(
        &srv,
        Method::GET,
        "/v1/tasks",
        &[(COOKIE.as_str(), &cookie)],
        None,
    )
    .await;
    assert_eq!(gone.status(), StatusCode::UNAUTHORIZED);
    srv.stop().await;
}

async fn changes_made_with_the_cookie_need_the_csrf_token<S: Backend>(store: S) {
    let srv = TestServer::start(store.any(), With::ApiOnly).await;
    srv.register(crate::CHAIN).await;
    let chain = json!({"template": "api/chain@1.0.0", "context": {"customer_id": 1}});
    let id = srv.post("/v1/tasks", &chain).await.body["id"]
        .as_i64()
        .unwrap();
    let cancel = format!("/v1/tasks/{id}/cancel");
    let admin = srv.admin.clone();
    let cookie = format!("tasker_session={admin}");
    let csrf = tasker_server::session::csrf_token(&admin);
    let wrong = tasker_server::session::csrf_token("another secret");
    let bearer = format!("Bearer {admin}");
    let origin = srv.base.clone();

    let refused: [(&str, Vec<(&str, &str)>); 6] = [
        ("cookie, no token", vec![("cookie", &cookie)]),
        (
            "cookie, wrong token",
            vec![("cookie", &cookie), ("x-csrf-token", &wrong)],
        ),
        (
            "another site, even with the token",
            vec![
                ("cookie", &cookie),
                ("x-csrf-token", &csrf),
                ("sec-fetch-site", "cross-site"),
            ],
        ),
        (
            "another origin, with a bearer token",
            vec![("authorization", &bearer), ("origin", "http://evil.test")],
        ),
        (
            "another port of this host",
            vec![
                ("authorization", &bearer),
                ("origin", "http://127.0.0.1:1"),
                ("sec-fetch-site", "same-site"),
            ],
        ),
        (
            "an opaque origin",
            vec![("cookie", &cookie), ("origin", "null")],
        ),
    ];
    for (what, headers) in refused {
        let res = raw(&srv, Method::POST, &cancel, &headers, None).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{what}");
        let problem: Value = res.json().await.unwrap();
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            detail.contains("x-csrf-token") || detail.contains("may not change"),
            "{what}: {detail}"
        );
        // Nothing was done.
        let task = srv.get(&format!("/v1/tasks/{id}")).await;
        assert_eq!(task.body["state"], "pending", "{what}");
    }
    // Sign-in is a change too (no signing in a victim from another site).
    let res = raw(
        &srv,
        Method::POST,
        "/ui/session",
        &[("origin", "http://evil.test")],
        Some(&json!({ "token": admin })),
    )
    .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(res.headers().get(SET_COOKIE).is_none());

    // Reads need no CSRF token; the page's own change passes.
    let read = raw(
        &srv,
        Method::GET,
        &format!("/v1/tasks/{id}"),
        &[("cookie", &cookie)],
        None,
    )
    .await;
    assert_eq!(read.status(), StatusCode::OK);
    let ok = raw(
        &srv,
        Method::POST,
        &cancel,
        &[
            ("cookie", &cookie),
            ("x-csrf-token", &csrf),
            ("origin", &origin),
            ("sec-fetch-site", "same-origin"),
        ],
        None,
    )
    .await;
    assert_eq!(ok.status(), StatusCode::OK);
    let task = srv.get(&format!("/v1/tasks/{id}")).await;
    assert_eq!(task.body["state"], "cancelled");
    // A client that is not a browser is unaffected.
    let other = srv.post("/v1/tasks", &chain).await.body["id"]
        .as_i64()
        .unwrap();
    let res = srv
        .call(
            Method::POST,
            &format!("/v1/tasks/{other}/cancel"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(res.status, StatusCode::OK, "{res:?}");
    srv.stop().await;
}

async fn counts_by_state_and_a_tasks_attempts<S: Backend>(store: S) {
    let srv = TestServer::start(store.any(), With::Workers).await;
    srv.register(crate::CHAIN).await;
    srv.register(crate::FAILING).await;
    let chain = json!({"template": "api/chain@1.0.0", "context": {"customer_id": 3}});
    let done = srv.post("/v1/tasks", &chain).await.body["id"]
        .as_i64()
        .unwrap();
    let failed = srv
        .post("/v1/tasks", &json!({"template": "api/failing@1.0.0"}))
        .await
        .body["id"]
        .as_i64()
        .unwrap();
    srv.wait_for(&format!("/v1/tasks/{done}"), BOUND, |t| {
        t["state"] == "complete"
    })
    .await;
    srv.wait_for(&format!("/v1/tasks/{failed}"), BOUND, |t| {
        t["state"] == "error"
    })
    .await;

    let all = srv.get("/v1/tasks/counts").await;
    assert_eq!(all.status, StatusCode::OK, "{all:?}");
    assert_eq!(
        all.body,
        json!({"pending": 0, "in_progress": 0, "complete": 1, "error": 1, "cancelled": 0,
               "total": 2})
    );
    let chains = srv.get("/v1/tasks/counts?template=api/chain").await;
    assert_eq!(
        (&chains.body["complete"], &chains.body["total"]),
        (&json!(1), &json!(1)),
        "{chains:?}"
    );
    // The counts take the listing's filters, checked the same way, but not its paging.
    for (bad, pointer) in [
        ("?created_after=yesterday", "?created_after"),
        ("?state=complete", "?state"),
        ("?limit=5", "?limit"),
    ] {
        let a = srv.get(&format!("/v1/tasks/counts{bad}")).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad}: {a:?}");
        assert_eq!(a.pointers(), [pointer], "{bad}: {a:?}");
    }

    let a = srv.get(&format!("/v1/tasks/{done}/attempts")).await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    let attempts = a.body["attempts"].as_array().unwrap();
    let names: Vec<&str> = attempts
        .iter()
        .map(|a| a["step_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b", "c"], "{a:?}");
    let detail = srv.get(&format!("/v1/tasks/{done}")).await;
    for (attempt, step) in attempts
        .iter()
        .zip(detail.body["steps"].as_array().unwrap())
    {
        assert_eq!(attempt["step_id"], step["id"]);
        assert_eq!(attempt["outcome"], "completed");
        assert!(attempt["fuel"].as_i64().unwrap() > 0, "{attempt}");
        assert!(attempt["plugin_hash"].is_string(), "{attempt}");
    }
    let f = srv.get(&format!("/v1/tasks/{failed}/attempts")).await;
    let only = &f.body["attempts"][0];
    assert_eq!(
        (only["step_name"].as_str(), only["outcome"].as_str()),
        (Some("only"), Some("failed")),
        "{f:?}"
    );
    assert_eq!(
        srv.get("/v1/tasks/999999999/attempts").await.status,
        StatusCode::NOT_FOUND
    );
    srv.stop().await;
}
