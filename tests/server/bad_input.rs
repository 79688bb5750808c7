//! Bad input gets problem JSON naming the field, and writes nothing.

use reqwest::{Method, StatusCode};
use serde_json::json;
use tasker_tests::Backend;
use tasker_tests::on_both_backends;
use tasker_tests::server::{Answer, Body, TEST_BODY_LIMIT, TestServer, With};

on_both_backends!(bad_input_names_the_field_and_writes_nothing);
on_both_backends!(a_template_naming_an_unknown_handler_is_refused_at_register);

/// An answer is a problem of this status whose errors name exactly these pointers.
#[track_caller]
fn problem(a: &Answer, status: StatusCode, pointers: &[&str]) {
    assert_eq!(a.status, status, "{a:?}");
    assert_eq!(
        a.header("content-type"),
        Some("application/problem+json"),
        "{a:?}"
    );
    assert!(
        a.body["type"]
            .as_str()
            .unwrap()
            .starts_with("urn:tasker:problem:"),
        "{a:?}"
    );
    assert_eq!(a.body["status"], status.as_u16(), "{a:?}");
    assert_eq!(a.pointers(), pointers, "{a:?}");
}

const UNKNOWN_HANDLER: &str = "namespace: api
name: missing
version: 1.0.0
steps:
  - { name: a, handler: echo@0.1.0 }
  - { name: b, handler: nowhere@9.9.9, depends_on: [a] }
";

async fn bad_input_names_the_field_and_writes_nothing<S: Backend>(store: S) {
    let srv = TestServer::start(store.any(), With::ApiOnly).await;
    srv.register(crate::CHAIN).await;
    // Registered ahead of a deploy: its components are checked again when a task is
    // submitted.
    let admin = srv.admin.clone();
    let a = srv
        .call(
            Method::POST,
            "/v1/templates?allow_missing_handlers=true",
            Some(&admin),
            Some(Body::Raw("application/yaml", UNKNOWN_HANDLER.as_bytes())),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{a:?}");
    let raw = |ct: &'static str, body: Vec<u8>| {
        let srv = &srv;
        let admin = admin.clone();
        async move {
            srv.call(
                Method::POST,
                "/v1/tasks",
                Some(&admin),
                Some(Body::Raw(ct, &body)),
            )
            .await
        }
    };

    let a = raw("application/json", b"{\"template\": ".to_vec()).await;
    problem(&a, StatusCode::BAD_REQUEST, &[]);
    assert!(
        a.body["detail"]
            .as_str()
            .unwrap()
            .contains("not valid JSON"),
        "{a:?}"
    );

    let a = raw(
        "application/json",
        br#"{"template": "api/chain@1.0.0", "colour": "red"}"#.to_vec(),
    )
    .await;
    problem(&a, StatusCode::BAD_REQUEST, &["/colour"]);

    let a = raw(
        "application/json",
        br#"{"template": "api/chain@1.0.0", "tags": ["a", 7]}"#.to_vec(),
    )
    .await;
    problem(&a, StatusCode::BAD_REQUEST, &["/tags/1"]);

    let big = format!(
        r#"{{"template": "api/chain@1.0.0", "context": {{"pad": "{}"}}}}"#,
        "x".repeat(TEST_BODY_LIMIT)
    );
    let a = raw("application/json", big.into_bytes()).await;
    problem(&a, StatusCode::PAYLOAD_TOO_LARGE, &[]);

    let a = raw("text/plain", b"{}".to_vec()).await;
    problem(&a, StatusCode::UNSUPPORTED_MEDIA_TYPE, &[]);

    let a = srv
        .post("/v1/tasks", &json!({"template": "api/nope@1.0.0"}))
        .await;
    problem(&a, StatusCode::UNPROCESSABLE_ENTITY, &["/template"]);

    let a = srv
        .post(
            "/v1/tasks",
            &json!({"template": "api/chain@1.0.0", "context": {"customer_id": "seven"}}),
        )
        .await;
    problem(
        &a,
        StatusCode::UNPROCESSABLE_ENTITY,
        &["/context/customer_id"],
    );

    let a = srv
        .post(
            "/v1/tasks",
            &json!({"template": "api/chain@1.0.0", "context": {}}),
        )
        .await;
    problem(&a, StatusCode::UNPROCESSABLE_ENTITY, &["/context"]);
    assert!(
        a.body["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("customer_id"),
        "{a:?}"
    );

    let a = srv
        .post(
            "/v1/tasks",
            &json!({"template": "api/chain@1.0.0", "context": [1]}),
        )
        .await;
    problem(&a, StatusCode::UNPROCESSABLE_ENTITY, &["/context"]);

    let a = srv
        .post("/v1/tasks", &json!({"template": "api/missing@1.0.0"}))
        .await;
    problem(
        &a,
        StatusCode::UNPROCESSABLE_ENTITY,
        &["steps[1] (b).handler"],
    );
    let available = a.body["available"].as_array().unwrap();
    assert!(
        available.iter().any(|p| p == "echo@0.1.0 (step-handler)"),
        "{a:?}"
    );

    // Query strings are checked by name.
    for (path, pointer) in [
        ("/v1/tasks?state=bogus", "?state"),
        ("/v1/tasks?limit=0", "?limit"),
        ("/v1/tasks?limit=501", "?limit"),
        ("/v1/tasks?cursor=abc", "?cursor"),
        ("/v1/tasks?created_after=yesterday", "?created_after"),
        ("/v1/tasks?colour=red", "?colour"),
        ("/v1/templates?limit=x", "?limit"),
    ] {
        let a = srv.get(path).await;
        problem(&a, StatusCode::BAD_REQUEST, &[pointer]);
    }

    // Templates: every problem with its location, and the content type checked.
    let bad = "namespace: api\nname: bad\nversion: 1.0.0\nsteps:\n  - { name: a, handler: echo@0.1.0 }\n  - { name: b, handler: echo@0.1.0, depends_on: [zz] }\n";
    let a = srv
        .call(
            Method::POST,
            "/v1/templates",
            Some(&admin),
            Some(Body::Raw("application/yaml", bad.as_bytes())),
        )
        .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{a:?}");
    assert_eq!(a.pointers(), ["steps[1] (b).depends_on"], "{a:?}");
    assert!(
        a.body["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("'zz'"),
        "{a:?}"
    );
    let rel = crate::CHAIN.replace("name: chain", "name: rel").replace(
        "{ name: a, handler: echo@0.1.0 }",
        "{ name: a, handler: echo@0.1.0, grants: { dirs: [{ host: data, guest: /data }] } }",
    );
    let a = srv
        .call(
            Method::POST,
            "/v1/templates",
            Some(&admin),
            Some(Body::Raw("application/yaml", rel.as_bytes())),
        )
        .await;
    problem(
        &a,
        StatusCode::UNPROCESSABLE_ENTITY,
        &["steps[0] (a).grants.dirs[0].host"],
    );
    // An HTTP grant naming a path in its url, a bad method and a secret without a source.
    let http = crate::CHAIN.replace("name: chain", "name: http").replace(
        "{ name: a, handler: echo@0.1.0 }",
        "{ name: a, handler: echo@0.1.0, grants: { http: [{ url: 'https://api.test/v1', methods: ['P OST'] }], secrets: { KEY: 'vault:k' } } }",
    );
    let a = srv
        .call(
            Method::POST,
            "/v1/templates",
            Some(&admin),
            Some(Body::Raw("application/yaml", http.as_bytes())),
        )
        .await;
    problem(
        &a,
        StatusCode::UNPROCESSABLE_ENTITY,
        &[
            "steps[0] (a).grants.http[0].url",
            "steps[0] (a).grants.http[0].methods[0]",
            "steps[0] (a).grants.secrets.KEY",
        ],
    );
    let a = srv
        .call(
            Method::POST,
            "/v1/templates",
            Some(&admin),
            Some(Body::Raw("image/png", b"\x89PNG")),
        )
        .await;
    problem(&a, StatusCode::UNSUPPORTED_MEDIA_TYPE, &[]);

    // Unknown routes and methods are problems too.
    let a = srv.get("/v1/nothing").await;
    problem(&a, StatusCode::NOT_FOUND, &[]);
    let a = srv.call(Method::PUT, "/v1/tasks", Some(&admin), None).await;
    problem(&a, StatusCode::METHOD_NOT_ALLOWED, &[]);

    // Nothing was written: no task, and only the two templates registered above.
    let tasks = srv.get("/v1/tasks").await;
    assert_eq!(tasks.body["items"], json!([]), "{tasks:?}");
    let templates = srv.get("/v1/templates").await;
    assert_eq!(
        templates.body["items"].as_array().unwrap().len(),
        2,
        "{templates:?}"
    );
    assert_eq!(store.count("SELECT count(*) FROM steps").await.unwrap(), 0);
    srv.stop().await;
}

/// Registering a template whose handler the server's plugin directory lacks is refused (the
/// step and handler named, what is there listed closest first) unless it is registered
/// ahead of a deploy on purpose, which answers with warnings.
async fn a_template_naming_an_unknown_handler_is_refused_at_register<S: Backend>(store: S) {
    let srv = TestServer::start(store.any(), With::ApiOnly).await;
    let admin = srv.admin.clone();
    let post = |path: &'static str, yaml: &'static str| {
        let srv = &srv;
        let admin = admin.clone();
        async move {
            srv.call(
                Method::POST,
                path,
                Some(&admin),
                Some(Body::Raw("application/yaml", yaml.as_bytes())),
            )
            .await
        }
    };
    let near = "namespace: api\nname: near\nversion: 1.0.0\nsteps:\n  - { name: a, handler: echo@0.2.0 }\n  - { name: b, handler: ehco@0.1.0, depends_on: [a] }\n";
    let a = post("/v1/templates", near).await;
    problem(
        &a,
        StatusCode::UNPROCESSABLE_ENTITY,
        &["steps[0] (a).handler", "steps[1] (b).handler"],
    );
    assert!(
        a.body["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("echo@0.2.0: no such version; the directory has echo 0.1.0"),
        "{a:?}"
    );
    assert!(
        a.body["detail"]
            .as_str()
            .unwrap()
            .contains("?allow_missing_handlers=true"),
        "{a:?}"
    );
    // The same name first, then the nearest name (`ehco` is one swap from `echo`).
    assert_eq!(a.body["available"][0], "echo@0.1.0 (step-handler)", "{a:?}");
    // A component of another world is refused at its place too.
    let hook = "namespace: api\nname: hookish\nversion: 1.0.0\nsteps:\n  - { name: a, handler: hook_noop@0.1.0 }\n";
    let a = post("/v1/templates", hook).await;
    problem(
        &a,
        StatusCode::UNPROCESSABLE_ENTITY,
        &["steps[0] (a).handler"],
    );
    assert!(
        a.body["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("hook_noop@0.1.0: exports the event-hook world, not step-handler"),
        "{a:?}"
    );
    let a = post("/v1/templates?allow_missing_handlers=maybe", near).await;
    problem(&a, StatusCode::BAD_REQUEST, &["?allow_missing_handlers"]);
    let templates = srv.get("/v1/templates").await;
    assert_eq!(templates.body["items"], json!([]), "nothing was written");

    // Ahead of a deploy: registered, each missing component in the warnings.
    let a = post("/v1/templates?allow_missing_handlers=true", near).await;
    assert_eq!(a.status, StatusCode::CREATED, "{a:?}");
    let warnings = a.body["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 2, "{a:?}");
    assert!(
        warnings[1]
            .as_str()
            .unwrap()
            .starts_with("steps[1] (b).handler: ehco@0.1.0: "),
        "{a:?}"
    );
    // A template the directory provides answers without warnings.
    let a = post("/v1/templates", crate::CHAIN).await;
    assert_eq!(a.status, StatusCode::CREATED, "{a:?}");
    assert!(a.body.get("warnings").is_none(), "{a:?}");
}
