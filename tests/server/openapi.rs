//! `/openapi.json`: the document describes exactly the route table (each route with its
//! method, its path parameters and its access rule), and real answers, successes and
//! problems, validate against the schema it documents for their route and status.
//!
//! The validation is stricter than the document: an object schema that lists its
//! properties is closed (`additionalProperties: false`) unless it says otherwise, so an
//! answer with a member the document does not name fails too.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Map, Value, json};
use tasker_server::routes::{Access, ROUTES};
use tasker_tests::Backend;
use tasker_tests::on_both_backends;
use tasker_tests::server::{Answer, Body, TEST_BODY_LIMIT, TestServer, With};

on_both_backends!(
    the_document_describes_every_route_and_its_access,
    real_answers_match_the_documented_schemas
);

const BOUND: Duration = Duration::from_secs(120);

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

async fn document(srv: &TestServer) -> Value {
    let a = srv.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    assert_eq!(a.header("content-type"), Some("application/json"), "{a:?}");
    a.body
}

/// A response object of the document, `$ref`s to `#/components/responses` followed.
fn response<'d>(doc: &'d Value, response: &'d Value) -> &'d Value {
    match response["$ref"].as_str() {
        Some(r) => {
            let name = r
                .strip_prefix("#/components/responses/")
                .unwrap_or_else(|| panic!("a response $ref outside the components: {r}"));
            let found = &doc["components"]["responses"][name];
            assert!(found.is_object(), "no response component {name}");
            found
        }
        None => response,
    }
}

async fn the_document_describes_every_route_and_its_access<S: Backend>(store: S) {
    let srv = TestServer::start(store.any(), With::ApiOnly).await;
    let doc = document(&srv).await;
    assert_eq!(doc["openapi"], "3.1.0", "{}", doc["openapi"]);
    assert_eq!(doc["info"]["title"], "Tasker API");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    let bearer = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(bearer["type"], "http", "{bearer}");
    assert_eq!(bearer["scheme"], "bearer", "{bearer}");

    // Every route of the table is documented with its method...
    for r in ROUTES {
        let op = &doc["paths"][r.path][r.method];
        assert!(
            op.is_object(),
            "{} {} is not in the document",
            r.method,
            r.path
        );
    }
    // ...and the document has nothing the table does not.
    let mut operation_ids = BTreeSet::new();
    let paths = doc["paths"].as_object().expect("paths");
    for (path, item) in paths {
        for (method, op) in item.as_object().expect("a path item") {
            if !METHODS.contains(&method.as_str()) {
                continue;
            }
            let what = format!("{method} {path}");
            let route = ROUTES
                .iter()
                .find(|r| r.path == path && r.method == method)
                .unwrap_or_else(|| panic!("{what} is documented but not in the route table"));
            let id = op["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{what}: no operationId"));
            assert!(
                operation_ids.insert(id.to_owned()),
                "{what}: operationId {id} twice"
            );
            check_parameters(&what, path, op);
            check_access(&what, route.access, op);
            check_responses(&doc, &what, op);
        }
    }
    srv.stop().await;
}

/// The path's `{parameters}` are exactly the operation's path parameters, each required.
fn check_parameters(what: &str, path: &str, op: &Value) {
    let in_path: BTreeSet<&str> = path
        .split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .collect();
    let params = op["parameters"].as_array().cloned().unwrap_or_default();
    let declared: BTreeSet<&str> = params
        .iter()
        .filter(|p| p["in"] == "path")
        .map(|p| {
            assert_eq!(p["required"], true, "{what}: {p}");
            p["name"].as_str().unwrap()
        })
        .collect();
    assert_eq!(in_path, declared, "{what}: path parameters");
}

/// Public routes need nothing; the others the bearer token, with its 401, and where a
/// permission is needed its 403 (a route any valid token may call never answers 403).
fn check_access(what: &str, access: Access, op: &Value) {
    let responses = &op["responses"];
    let security = op.get("security").cloned().unwrap_or(Value::Null);
    match access {
        Access::Public => {
            assert!(
                security.is_null() || security == json!([]) || security == json!([{}]),
                "{what} is public but needs {security}"
            );
            assert!(
                responses.get("401").is_none(),
                "{what} is public but may answer 401"
            );
            assert!(
                responses.get("403").is_none(),
                "{what} is public but may answer 403"
            );
        }
        Access::Authenticated | Access::Need(_) => {
            assert_eq!(security, json!([{"bearer": []}]), "{what}");
            assert!(responses.get("401").is_some(), "{what}: no 401");
            let forbids = matches!(access, Access::Need(_));
            assert_eq!(responses.get("403").is_some(), forbids, "{what}: 403");
        }
    }
    if let Access::Need(p) = access {
        let d = op["description"].as_str().unwrap_or("");
        assert!(
            d.contains(&format!("`{p}`")),
            "{what} does not say it needs {p}: {d}"
        );
    }
}

/// Each response has a description; successes are JSON (event streams: `text/event-stream`
/// of JSON events; metrics: Prometheus text), errors problems.
fn check_responses(doc: &Value, what: &str, op: &Value) {
    let responses = op["responses"].as_object().expect("responses");
    assert!(
        responses.keys().any(|s| s.starts_with('2')),
        "{what}: no success"
    );
    for (status, r) in responses {
        let r = response(doc, r);
        assert!(r["description"].is_string(), "{what} {status}: {r}");
        let content = r["content"].as_object().expect("a response with a body");
        if status.starts_with('2') {
            let media = if what.ends_with("/events") {
                "text/event-stream"
            } else if what.ends_with("/metrics") {
                "text/plain"
            } else {
                "application/json"
            };
            assert!(content.contains_key(media), "{what} {status}: {r}");
        } else {
            let problem = &content["application/problem+json"];
            assert_eq!(
                problem["schema"],
                json!({"$ref": "#/components/schemas/Problem"}),
                "{what} {status}: {r}"
            );
            let example = &problem["example"];
            assert_eq!(
                example["status"].to_string(),
                *status,
                "{what} {status}: {r}"
            );
        }
    }
}

/// The document's schemas as one JSON Schema (2020-12) resource: the components under
/// `$defs`, every object that lists its properties closed unless it says otherwise.
struct Schemas {
    doc: Value,
    defs: Map<String, Value>,
}

impl Schemas {
    fn of(doc: &Value) -> Schemas {
        let text = doc.to_string().replace("#/components/schemas/", "#/$defs/");
        let doc: Value = serde_json::from_str(&text).unwrap();
        let original = doc["components"]["schemas"].as_object().unwrap().clone();
        let mut defs = original.clone();
        for schema in defs.values_mut() {
            close(schema, &original);
        }
        Schemas { doc, defs }
    }

    /// Checks `a`, the answer of `method route`, against the schema documented for its
    /// status and content type.
    fn check(&self, method: &str, route: &str, a: &Answer) {
        let ct = a.header("content-type").unwrap_or("");
        if let Err(e) = self.validate(method, route, a.status.as_u16(), ct, &a.body) {
            panic!("{e}\nanswer: {:#}", a.body);
        }
    }

    /// Why `body` is not what `method route` is documented to answer with `status` and
    /// `content_type`.
    fn validate(
        &self,
        method: &str,
        route: &str,
        status: u16,
        content_type: &str,
        body: &Value,
    ) -> Result<(), String> {
        let what = format!("{} {route} ({status})", method.to_uppercase());
        let op = &self.doc["paths"][route][method];
        if !op.is_object() {
            return Err(format!("{what}: not documented"));
        }
        let Some(r) = op["responses"].get(status.to_string()) else {
            return Err(format!("{what}: an undocumented status"));
        };
        let r = response(&self.doc, r);
        let media = content_type.split(';').next().unwrap_or("").trim();
        let Some(content) = r["content"].get(media) else {
            return Err(format!(
                "{what}: content type '{content_type}' is not documented: {r}"
            ));
        };
        let mut schema = content["schema"].clone();
        close(&mut schema, &self.defs);
        let mut root = match schema {
            Value::Object(m) => m,
            other => panic!("{what}: a schema that is not an object: {other}"),
        };
        root.insert(
            "$schema".into(),
            json!("https://json-schema.org/draft/2020-12/schema"),
        );
        root.insert("$defs".into(), Value::Object(self.defs.clone()));
        let root = Value::Object(root);
        let validator = jsonschema::validator_for(&root)
            .map_err(|e| format!("{what}: the documented schema does not compile: {e}"))?;
        let errors: Vec<String> = validator
            .iter_errors(body)
            .map(|e| format!("at '{}': {e}", e.instance_path()))
            .collect();
        if errors.is_empty() {
            return Ok(());
        }
        Err(format!(
            "{what}: the answer does not match its documented schema:\n  {}",
            errors.join("\n  ")
        ))
    }
}

/// Closes `schema`'s objects: an `allOf` of objects (a flattened struct) becomes the one
/// object it describes, and an object listing `properties` without `additionalProperties`
/// gets `additionalProperties: false`. `defs` resolves the `$ref`s of an `allOf`.
fn close(schema: &mut Value, defs: &Map<String, Value>) {
    let Value::Object(m) = schema else {
        if let Value::Array(items) = schema {
            items.iter_mut().for_each(|i| close(i, defs));
        }
        return;
    };
    if let Some(Value::Array(parts)) = m.get("allOf")
        && let Some(merged) = merge_objects(parts, defs)
    {
        m.remove("allOf");
        for (k, v) in merged {
            m.entry(k).or_insert(v);
        }
    }
    if m.contains_key("properties") && !m.contains_key("additionalProperties") {
        m.insert("additionalProperties".into(), Value::Bool(false));
    }
    for (k, v) in m.iter_mut() {
        // `properties` maps names to schemas; the other members are schemas or lists of them
        // (or plain values, which `close` leaves alone).
        match k.as_str() {
            "properties" | "$defs" | "patternProperties" => {
                if let Value::Object(props) = v {
                    props.values_mut().for_each(|p| close(p, defs));
                }
            }
            "enum" | "const" | "example" | "examples" | "default" | "required" => {}
            _ => close(v, defs),
        }
    }
}

/// The object that an `allOf` of object schemas (inline, or `$ref`s to them) describes:
/// their properties and required members together. None when a part is something else.
fn merge_objects(parts: &[Value], defs: &Map<String, Value>) -> Option<Map<String, Value>> {
    let mut properties = Map::new();
    let mut required = BTreeSet::new();
    let mut open = None;
    for part in parts {
        let part = match part["$ref"].as_str() {
            Some(r) => defs.get(r.strip_prefix("#/$defs/")?)?,
            None => part,
        };
        let part = match part.get("allOf") {
            Some(Value::Array(inner)) => &Value::Object(merge_objects(inner, defs)?),
            _ => part,
        };
        if part.get("type").is_some_and(|t| t != "object") || part.get("properties").is_none() {
            return None;
        }
        properties.extend(part["properties"].as_object()?.clone());
        for r in part["required"].as_array().into_iter().flatten() {
            required.insert(r.as_str()?.to_owned());
        }
        if let Some(a) = part.get("additionalProperties") {
            open = Some(a.clone());
        }
    }
    let mut m = Map::new();
    m.insert("type".into(), json!("object"));
    m.insert("properties".into(), Value::Object(properties));
    m.insert("required".into(), json!(required));
    if let Some(a) = open {
        m.insert("additionalProperties".into(), a);
    }
    Some(m)
}

/// The checks above fail where they should: an undocumented member, a missing required
/// one, a wrong type or enum value, a member of a flattened struct, a problem as JSON.
#[test]
fn the_validation_is_strict() {
    let doc: Value = serde_json::from_str(tasker_server::openapi::json()).unwrap();
    let schemas = Schemas::of(&doc);
    let json = "application/json";
    let task = json!({
        "id": 1, "template": "api/chain@1.0.0", "state": "pending", "context": {},
        "tags": [], "step_count": 3, "unfinished_steps": 3, "error_steps": 0,
        "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
    });
    let create = |body: &Value| schemas.validate("post", "/v1/tasks", 201, json, body);
    create(&task).unwrap();
    let with = |k: &str, v: Value| {
        let mut t = task.clone();
        t[k] = v;
        t
    };
    let without = |k: &str| {
        let mut t = task.clone();
        t.as_object_mut().unwrap().remove(k);
        t
    };
    for (bad, why) in [
        (with("surprise", json!(1)), "surprise"),
        (without("state"), "state"),
        (with("state", json!("finished")), "finished"),
        (with("id", json!("1")), "\"1\""),
        (with("context", json!([])), "context"),
        (with("identity_key", Value::Null), "identity_key"),
    ] {
        let e = create(&bad).expect_err(why);
        assert!(e.contains(why) || e.contains("null"), "{why}: {e}");
    }
    // A flattened struct (TaskView in TaskDetail): its members and the detail's, no others.
    let detail = with("steps", json!([])).as_object().cloned().map(|mut m| {
        m.insert("execution".into(), Value::Null);
        Value::Object(m)
    });
    let detail = detail.unwrap();
    let show = |body: &Value| schemas.validate("get", "/v1/tasks/{id}", 200, json, body);
    show(&detail).unwrap();
    let mut extra = detail.clone();
    extra["surprise"] = json!(true);
    assert!(show(&extra).unwrap_err().contains("surprise"));
    let mut missing = detail.clone();
    missing.as_object_mut().unwrap().remove("execution");
    assert!(show(&missing).unwrap_err().contains("execution"));
    // Problems: as problem JSON only, with their extra members allowed.
    let problem = json!({"type": "urn:tasker:problem:not-found", "title": "Not Found",
                         "status": 404, "detail": "no task 9", "existing_task": 1});
    let p = "application/problem+json";
    schemas
        .validate("get", "/v1/tasks/{id}", 404, p, &problem)
        .unwrap();
    assert!(
        schemas
            .validate("get", "/v1/tasks/{id}", 404, json, &problem)
            .is_err()
    );
    assert!(
        schemas
            .validate("get", "/v1/tasks/{id}", 418, p, &problem)
            .is_err()
    );
    let mut bad = problem.clone();
    bad["type"] = json!("about:blank");
    assert!(
        schemas
            .validate("get", "/v1/tasks/{id}", 404, p, &bad)
            .is_err()
    );
    bad["type"] = problem["type"].clone();
    bad["errors"] = json!([{"pointer": "/x"}]);
    assert!(
        schemas
            .validate("get", "/v1/tasks/{id}", 404, p, &bad)
            .is_err()
    );
}

fn state_is(s: &'static str) -> impl Fn(&Value) -> bool {
    move |t| t["state"] == s
}

async fn real_answers_match_the_documented_schemas<S: Backend>(store: S) {
    let srv = TestServer::start(store.any(), With::Workers).await;
    let schemas = Schemas::of(&document(&srv).await);
    let check = |method: &str, route: &str, a: &Answer| schemas.check(method, route, a);
    let admin = srv.admin.clone();

    // Templates: registered (201), again (200), listed, shown.
    let a = srv.register(crate::CHAIN).await;
    assert_eq!(a.status, StatusCode::CREATED, "{a:?}");
    check("post", "/v1/templates", &a);
    let a = srv.register(crate::CHAIN).await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    check("post", "/v1/templates", &a);
    srv.register(crate::FAILING).await;
    let a = srv.get("/v1/templates").await;
    check("get", "/v1/templates", &a);
    let a = srv.get("/v1/templates?limit=1").await;
    assert!(a.body["next_cursor"].is_string(), "{a:?}");
    check("get", "/v1/templates", &a);
    let a = srv.get("/v1/templates/api/chain/1.0.0").await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    check("get", "/v1/templates/{namespace}/{name}/{version}", &a);

    // A task with every optional member (201), the same identity key again (200), and a
    // second one, so that listings have pages.
    let full = json!({
        "template": "api/chain@1.0.0",
        "context": {"customer_id": 9},
        "identity_key": "openapi-1",
        "tags": ["openapi", "test"],
        "initiator": "the suite",
        "source_system": "tests",
        "reason": "validation",
    });
    let a = srv.post("/v1/tasks", &full).await;
    assert_eq!(a.status, StatusCode::CREATED, "{a:?}");
    check("post", "/v1/tasks", &a);
    let id = a.body["id"].as_i64().unwrap();
    let a = srv.post("/v1/tasks", &full).await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    check("post", "/v1/tasks", &a);
    let a = srv
        .post(
            "/v1/tasks",
            &json!({"template": "api/chain@1.0.0", "context": {"customer_id": 10}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{a:?}");
    check("post", "/v1/tasks", &a);
    let second = a.body["id"].as_i64().unwrap();

    // Pending, then complete: readiness, execution context, finish instants.
    let a = srv.get(&format!("/v1/tasks/{second}")).await;
    check("get", "/v1/tasks/{id}", &a);
    let task = format!("/v1/tasks/{id}");
    srv.wait_for(&task, BOUND, state_is("complete")).await;
    let a = srv.get(&task).await;
    assert!(a.body["finished_at"].is_string(), "{a:?}");
    check("get", "/v1/tasks/{id}", &a);
    let step = a.body["steps"][2]["id"].as_i64().unwrap();
    let a = srv.get("/v1/tasks").await;
    check("get", "/v1/tasks", &a);
    let a = srv
        .get("/v1/tasks?limit=1&state=complete,pending,in_progress")
        .await;
    assert!(a.body["next_cursor"].is_string(), "{a:?}");
    check("get", "/v1/tasks", &a);
    let a = srv.get(&format!("{task}/transitions")).await;
    assert!(a.body.as_array().is_some_and(|t| !t.is_empty()), "{a:?}");
    check("get", "/v1/tasks/{id}/transitions", &a);
    let a = srv.get(&format!("/v1/steps/{step}")).await;
    assert!(a.body["attempt_history"][0]["fuel"].is_i64(), "{a:?}");
    check("get", "/v1/steps/{id}", &a);

    // A failing task: its failed attempt, retried (200), resolved by hand (200).
    let a = srv
        .post("/v1/tasks", &json!({"template": "api/failing@1.0.0"}))
        .await;
    let failing = a.body["id"].as_i64().unwrap();
    let t = srv
        .wait_for(&format!("/v1/tasks/{failing}"), BOUND, state_is("error"))
        .await;
    let only = t["steps"][0]["id"].as_i64().unwrap();
    let a = srv.get(&format!("/v1/tasks/{failing}")).await;
    assert_eq!(
        a.body["steps"][0]["last_error_kind"], "handler_error",
        "{a:?}"
    );
    check("get", "/v1/tasks/{id}", &a);
    let a = srv.get(&format!("/v1/steps/{only}")).await;
    assert_eq!(
        a.body["attempt_history"][0]["decision"], "permanent",
        "{a:?}"
    );
    check("get", "/v1/steps/{id}", &a);
    let a = srv
        .call(
            Method::POST,
            &format!("/v1/tasks/{failing}/retry"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    check("post", "/v1/tasks/{id}/retry", &a);
    srv.wait_for(&format!("/v1/steps/{only}"), BOUND, |s| {
        s["attempt_history"]
            .as_array()
            .is_some_and(|a| a.len() == 2)
            && s["state"] == "error"
    })
    .await;
    srv.wait_for(&format!("/v1/tasks/{failing}"), BOUND, state_is("error"))
        .await;
    let a = srv
        .post(
            &format!("/v1/steps/{only}/resolve"),
            &json!({"result": {"by": "the suite"}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    check("post", "/v1/steps/{id}/resolve", &a);
    let a = srv.get(&format!("/v1/steps/{only}")).await;
    check("get", "/v1/steps/{id}", &a);

    // Another failing task, cancelled (200), and again (200, nothing to do).
    let a = srv
        .post("/v1/tasks", &json!({"template": "api/failing@1.0.0"}))
        .await;
    let doomed = a.body["id"].as_i64().unwrap();
    srv.wait_for(&format!("/v1/tasks/{doomed}"), BOUND, state_is("error"))
        .await;
    for _ in 0..2 {
        let a = srv
            .call(
                Method::POST,
                &format!("/v1/tasks/{doomed}/cancel"),
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{a:?}");
        check("post", "/v1/tasks/{id}/cancel", &a);
    }

    // Event streams: each event's data is the documented EventData (the cancelled task's
    // stream ends by itself; the failing one's holds custom events too).
    for t in [doomed, id] {
        let mut s = srv.sse(&format!("/v1/tasks/{t}/events"), None).await;
        let mut n = 0;
        while let Some(e) = s.next(BOUND).await {
            n += 1;
            let route = "/v1/tasks/{id}/events";
            if let Err(err) = schemas.validate("get", route, 200, "text/event-stream", &e.data) {
                panic!("{err}\nevent: {e:?}");
            }
        }
        assert!(n > 0, "task {t}: no events");
    }

    // Plugins, tokens, health.
    let a = srv.get("/v1/plugins").await;
    assert!(a.body.as_array().is_some_and(|p| !p.is_empty()), "{a:?}");
    check("get", "/v1/plugins", &a);
    let a = srv.get("/v1/plugins/echo@0.1.0").await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    check("get", "/v1/plugins/{plugin}", &a);
    let a = srv
        .post(
            "/v1/tokens",
            &json!({"name": "openapi", "permissions": ["tasks:read"],
                    "expires_at": "2999-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{a:?}");
    check("post", "/v1/tokens", &a);
    let a = srv.get("/v1/tokens").await;
    check("get", "/v1/tokens", &a);
    let a = srv
        .call(Method::DELETE, "/v1/tokens/openapi", Some(&admin), None)
        .await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    check("delete", "/v1/tokens/{name}", &a);
    let a = srv.get("/v1/tokens").await;
    assert!(a.body.to_string().contains("revoked_at"), "{a:?}");
    check("get", "/v1/tokens", &a);
    // Schedules: created (201), replaced (200), listed, shown, paused, resumed, deleted.
    let sched = json!({"name": "openapi", "template": "api/chain@1.0.0", "cron": "0 * * * *",
                       "tz": "Europe/Paris", "context": {"customer_id": 3}, "missed": "run_once",
                       "priority": 4});
    for status in [StatusCode::CREATED, StatusCode::OK] {
        let a = srv.post("/v1/schedules", &sched).await;
        assert_eq!(a.status, status, "{a:?}");
        check("post", "/v1/schedules", &a);
    }
    let a = srv.get("/v1/schedules").await;
    check("get", "/v1/schedules", &a);
    let a = srv.get("/v1/schedules/openapi").await;
    check("get", "/v1/schedules/{name}", &a);
    for verb in ["pause", "resume"] {
        let a = srv
            .call(
                Method::POST,
                &format!("/v1/schedules/openapi/{verb}"),
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{a:?}");
        check("post", &format!("/v1/schedules/{{name}}/{verb}"), &a);
    }
    let a = srv
        .call(Method::DELETE, "/v1/schedules/openapi", Some(&admin), None)
        .await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    check("delete", "/v1/schedules/{name}", &a);
    for path in ["/health/live", "/health/ready", "/health/status"] {
        let a = srv.get(path).await;
        assert_eq!(a.status, StatusCode::OK, "{path}: {a:?}");
        check("get", path, &a);
    }

    // Problems: each with the status it is documented with.
    let problems: Vec<(&str, &str, Answer, StatusCode)> = vec![
        (
            "get",
            "/v1/tasks/{id}",
            srv.get("/v1/tasks/999999").await,
            StatusCode::NOT_FOUND,
        ),
        (
            "get",
            "/v1/tasks/{id}",
            srv.get("/v1/tasks/x").await,
            StatusCode::BAD_REQUEST,
        ),
        (
            "get",
            "/v1/tasks",
            srv.get("/v1/tasks?limit=0").await,
            StatusCode::BAD_REQUEST,
        ),
        (
            "post",
            "/v1/tasks",
            srv.post("/v1/tasks", &json!({"template": "api/chain@1.0.0"}))
                .await,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "post",
            "/v1/tasks",
            srv.post("/v1/tasks", &json!({"template": "api/nope@1.0.0"}))
                .await,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "post",
            "/v1/tasks",
            srv.call(
                Method::POST,
                "/v1/tasks",
                Some(&admin),
                Some(Body::Raw("text/plain", b"{}")),
            )
            .await,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "post",
            "/v1/tasks",
            srv.post(
                "/v1/tasks",
                &json!({"template": "x".repeat(TEST_BODY_LIMIT + 1)}),
            )
            .await,
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "post",
            "/v1/tasks/{id}/cancel",
            srv.call(Method::POST, &format!("{task}/cancel"), Some(&admin), None)
                .await,
            StatusCode::CONFLICT,
        ),
        (
            "post",
            "/v1/tasks",
            srv.post(
                "/v1/tasks",
                &json!({"template": "api/chain@1.0.0", "oops": 1}),
            )
            .await,
            StatusCode::BAD_REQUEST,
        ),
        (
            "get",
            "/v1/tasks",
            srv.call(Method::GET, "/v1/tasks", None, None).await,
            StatusCode::UNAUTHORIZED,
        ),
        (
            "get",
            "/health/status",
            srv.call(Method::GET, "/health/status", Some("tkr_nope"), None)
                .await,
            StatusCode::UNAUTHORIZED,
        ),
        (
            "get",
            "/v1/tokens",
            srv.call(
                Method::GET,
                "/v1/tokens",
                Some(&srv.token(&["tasks:read"]).await),
                None,
            )
            .await,
            StatusCode::FORBIDDEN,
        ),
        (
            "post",
            "/v1/templates",
            srv.call(
                Method::POST,
                "/v1/templates",
                Some(&admin),
                Some(Body::Raw(
                    "application/yaml",
                    b"namespace: api\nname: bad\n",
                )),
            )
            .await,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "delete",
            "/v1/tokens/{name}",
            srv.call(Method::DELETE, "/v1/tokens/openapi", Some(&admin), None)
                .await,
            StatusCode::NOT_FOUND,
        ),
    ];
    let mut seen = BTreeMap::new();
    for (method, route, a, status) in &problems {
        assert_eq!(a.status, *status, "{method} {route}: {a:?}");
        assert!(
            a.body["type"]
                .as_str()
                .is_some_and(|t| t.starts_with("urn:tasker:problem:")),
            "{a:?}"
        );
        check(method, route, a);
        *seen.entry(status.as_u16()).or_insert(0) += 1;
    }
    // The field errors of a 422 are checked too.
    assert!(
        problems
            .iter()
            .any(|(_, _, a, s)| *s == StatusCode::UNPROCESSABLE_ENTITY && !a.pointers().is_empty()),
        "{seen:?}"
    );
    srv.stop().await;
}
