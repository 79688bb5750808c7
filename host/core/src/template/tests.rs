use super::*;

const ORDER: &str = r#"
namespace: shop
name: order_fulfilment
version: 1.2.0
description: Validate, reserve and charge, ship, notify.
context_schema:
  type: object
  required: [order_id]
  properties:
    order_id: { type: integer }
defaults:
  retry:
    max_attempts: 4
    backoff: { base_ms: 500, cap_ms: 5000 }
  limits:
    timeout_ms: 2000
steps:
  - name: validate
    handler: order-validate@1.0.0
  - name: reserve
    handler: order-reserve@1.0.0
    depends_on: validate
  - name: charge
    handler: order-charge@1.0.0
    depends_on: [validate]
    retry:
      max_attempts: 5
      by_kind: { timeout: false }
    limits: { fuel: 1000000, memory_mb: 32 }
    config: { fail_times: 2, retry_after_ms: 50 }
  - name: ship
    handler: blake3:00112233445566778899AABBCCDDEEFF00112233445566778899aabbccddeeff
    depends_on: [reserve, charge]
    pin: latest
    grants:
      dirs: [{ host: ./out, guest: /out, mode: rw }]
      env: [SHIP_REGION]
      net: ["api.example.com:443"]
  - name: notify
    handler: notify@0.1.0
    depends_on: ship
    retry: { retryable: false }
"#;

fn err(yaml: &str) -> TemplateError {
    Template::from_yaml(yaml).expect_err("template should be refused")
}

fn minimal(steps: &str) -> String {
    format!("namespace: ns\nname: t\nversion: 1.0.0\nsteps:\n{steps}")
}

#[test]
fn parses_and_resolves_defaults() {
    let t = Template::from_yaml(ORDER).unwrap();
    assert_eq!(t.key(), "shop/order_fulfilment@1.2.0");
    assert_eq!(t.steps.len(), 5);
    let charge = t.step("charge").unwrap();
    assert_eq!(charge.retry.max_attempts, 5);
    assert_eq!(charge.retry.backoff.base_ms, 500);
    assert_eq!(charge.retry.backoff.cap_ms, 5000);
    assert_eq!(charge.retry.backoff.multiplier, 2.0);
    assert_eq!(charge.limits.timeout_ms, Some(2000));
    assert_eq!(charge.limits.fuel, Some(1_000_000));
    assert_eq!(charge.config["fail_times"], 2);
    assert!(!charge.retry.should_retry(ErrorKind::Timeout, None));
    assert!(charge.retry.should_retry(ErrorKind::Trap, None));
    assert!(!charge.retry.should_retry(ErrorKind::OutOfFuel, None));
    assert!(
        !charge
            .retry
            .should_retry(ErrorKind::HandlerError, Some(false))
    );
    assert!(
        charge
            .retry
            .should_retry(ErrorKind::HandlerError, Some(true))
    );

    let validate = t.step("validate").unwrap();
    assert_eq!(validate.retry.max_attempts, 4);
    assert_eq!(validate.config, serde_json::json!({}));
    assert_eq!(t.step("reserve").unwrap().depends_on, vec!["validate"]);

    let ship = t.step("ship").unwrap();
    assert!(
        matches!(&ship.handler, HandlerRef::Hash(h) if h.starts_with("00112233") && h.contains("aabbcc"))
    );
    assert_eq!(ship.pin, Pin::Latest);
    assert_eq!(ship.grants.dirs[0].mode, DirMode::ReadWrite);

    let notify = t.step("notify").unwrap();
    assert!(!notify.retry.should_retry(ErrorKind::Timeout, Some(true)));

    let levels = t.dag().unwrap().levels();
    assert_eq!(levels, vec![0, 1, 1, 2, 3]);
}

#[test]
fn resolved_template_round_trips_through_json() {
    let t = Template::from_yaml(ORDER).unwrap();
    let json = serde_json::to_value(&t).unwrap();
    let back: Template = serde_json::from_value(json).unwrap();
    assert_eq!(back, t);
}

#[test]
fn context_is_checked_against_the_schema() {
    let t = Template::from_yaml(ORDER).unwrap();
    t.validate_context(&serde_json::json!({"order_id": 7}))
        .unwrap();
    let e = t
        .validate_context(&serde_json::json!({"order_id": "seven"}))
        .unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("/order_id"), "{msg}");
    assert!(msg.contains("shop/order_fulfilment@1.2.0"), "{msg}");
    let e = t.validate_context(&serde_json::json!({})).unwrap_err();
    assert!(e.errors[0].message.contains("order_id"), "{e}");
}

#[test]
fn cycle_is_refused_and_printed() {
    let e = err(&minimal(
        "  - {name: a, handler: h@1.0.0, depends_on: c}\n  - {name: b, handler: h@1.0.0, depends_on: a}\n  - {name: c, handler: h@1.0.0, depends_on: b}\n",
    ));
    let msg = e.to_string();
    assert!(msg.contains("dependency cycle: "), "{msg}");
    assert!(
        msg.contains("a -> b -> c -> a")
            || msg.contains("b -> c -> a -> b")
            || msg.contains("c -> a -> b -> c"),
        "{msg}"
    );
}

#[test]
fn unknown_dependency_names_step_and_dependency() {
    let e = err(&minimal(
        "  - {name: a, handler: h@1.0.0}\n  - {name: b, handler: h@1.0.0, depends_on: [a, pack]}\n",
    ));
    assert_eq!(e.problems.len(), 1, "{e}");
    assert_eq!(e.problems[0].location, "steps[1] (b).depends_on");
    assert_eq!(
        e.problems[0].message,
        "step 'b' depends on unknown step 'pack'"
    );
}

#[test]
fn duplicate_step_is_refused() {
    let e = err(&minimal(
        "  - {name: a, handler: h@1.0.0}\n  - {name: a, handler: h@1.0.0}\n",
    ));
    assert_eq!(e.problems[0].location, "steps[1] (a).name");
    assert!(e.mentions("defined more than once"), "{e}");
}

#[test]
fn empty_templates_are_refused() {
    assert!(err("").mentions("the template is empty"));
    assert!(err("   \n# only a comment\n").mentions("empty"));
    let e = err("namespace: ns\nname: t\nversion: 1.0.0\nsteps: []\n");
    assert_eq!(e.problems[0].location, "steps");
    assert!(e.mentions("no steps"));
}

#[test]
fn bad_versions_are_refused() {
    let e = err("namespace: ns\nname: t\nversion: one\nsteps:\n  - {name: a, handler: h@1.0.0}\n");
    assert_eq!(e.problems[0].location, "version");
    assert!(e.mentions("not a semantic version"), "{e}");
    let e = err(&minimal("  - {name: a, handler: h@latest}\n"));
    assert_eq!(e.problems[0].location, "steps[0] (a).handler");
    assert!(e.mentions("not semver"), "{e}");
    let e = err(&minimal("  - {name: a, handler: just-a-name}\n"));
    assert!(
        e.mentions("expected 'name@version' or 'blake3:<hash>'"),
        "{e}"
    );
    let e = err(&minimal("  - {name: a, handler: 'blake3:abc'}\n"));
    assert!(e.mentions("64 hex digits"), "{e}");
}

#[test]
fn unknown_fields_are_refused_with_their_path_and_line() {
    let e = err(&minimal(
        "  - name: a\n    handler: h@1.0.0\n    retry:\n      max_atempts: 3\n",
    ));
    let p = &e.problems[0];
    assert!(p.location.starts_with("steps[0].retry"), "{e}");
    assert!(p.location.contains("line 8"), "{e}");
    assert!(p.message.contains("unknown field `max_atempts`"), "{e}");
    assert!(
        p.message.contains("max_attempts"),
        "suggests the known fields: {e}"
    );

    let e = err("namespace: ns\nname: t\nversion: 1.0.0\nstepz: []\n");
    assert!(e.mentions("unknown field `stepz`"), "{e}");
}

#[test]
fn wrong_types_are_refused_with_their_path() {
    let e = err(&minimal(
        "  - {name: a, handler: h@1.0.0, limits: {fuel: lots}}\n",
    ));
    assert!(
        e.problems[0].location.starts_with("steps[0].limits.fuel"),
        "{e}"
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let e = err(&minimal(
        "  - name: 'bad name'\n    handler: h@1.0.0\n    retry: {max_attempts: 0, backoff: {multiplier: 0.5, jitter: 3}, by_kind: {sometimes: true}}\n    limits: {timeout_ms: 0}\n    grants:\n      dirs: [{host: ./x, guest: data}, {host: ./y, guest: /d/../etc}]\n      env: ['1X']\n      net: ['example.com']\n",
    ));
    let locations: Vec<&str> = e.problems.iter().map(|p| p.location.as_str()).collect();
    for want in [
        "steps[0] (bad name).name",
        "steps[0] (bad name).retry.max_attempts",
        "steps[0] (bad name).retry.by_kind",
        "steps[0] (bad name).retry.backoff.multiplier",
        "steps[0] (bad name).retry.backoff.jitter",
        "steps[0] (bad name).limits.timeout_ms",
        "steps[0] (bad name).grants.dirs[0].guest",
        "steps[0] (bad name).grants.dirs[1].guest",
        "steps[0] (bad name).grants.env[0]",
        "steps[0] (bad name).grants.net[0]",
    ] {
        assert!(locations.contains(&want), "missing {want} in {e}");
    }
    let text = e.to_string();
    assert!(
        text.starts_with("invalid template template:\n  - "),
        "{text}"
    );
}

#[test]
fn bad_context_schema_is_refused() {
    let e = err(
        "namespace: ns\nname: t\nversion: 1.0.0\ncontext_schema: {type: 12}\nsteps:\n  - {name: a, handler: h@1.0.0}\n",
    );
    assert_eq!(e.problems[0].location, "context_schema");
}

#[test]
fn source_name_prefixes_the_message() {
    let e = Template::from_yaml_named("", "examples/x.yaml").unwrap_err();
    assert!(
        e.to_string()
            .starts_with("invalid template examples/x.yaml:")
    );
}

#[test]
fn hooks_and_retry_policies_resolve() {
    let t = Template::from_yaml(
        "namespace: ns\nname: t\nversion: 1.0.0\nretry_policy: smart@1.0.0\n\
         hooks:\n  - component: audit@0.1.0\n    events: ['*']\n    limits: {timeout_ms: 100}\n\
         \x20   delivery: {max_attempts: 2, backoff: {base_ms: 10}}\n\
         \x20 - {component: notify@0.1.0, events: task.failed}\n\
         \x20 - {component: pay@0.1.0, events: [custom.payment_charged, step.*]}\n\
         steps:\n  - {name: a, handler: h@1.0.0}\n  - {name: b, handler: h@1.0.0, retry_policy: other@2.0.0}\n\
         \x20 - {name: c, handler: h@1.0.0, retry_policy: builtin}\n",
    )
    .unwrap();
    assert_eq!(t.hooks.len(), 3);
    assert_eq!(t.hooks[0].delivery.max_attempts, 2);
    assert_eq!(t.hooks[0].delivery.backoff.base_ms, 10);
    assert_eq!(t.hooks[0].limits.timeout_ms, Some(100));
    assert_eq!(t.hooks[1].events, vec!["task.failed".to_string()]);
    assert_eq!(t.hooks[1].delivery.max_attempts, DEFAULT_HOOK_MAX_ATTEMPTS);
    assert!(t.hooks[1].wants("task.failed") && !t.hooks[1].wants("task.completed"));
    assert!(t.hooks[2].wants("custom.payment_charged") && t.hooks[2].wants("step.failed"));
    assert!(!t.hooks[2].wants("custom.other"));
    let policy = |s: &str| {
        t.step(s)
            .unwrap()
            .retry_policy
            .as_ref()
            .map(|p| p.to_string())
    };
    assert_eq!(policy("a").as_deref(), Some("smart@1.0.0"));
    assert_eq!(policy("b").as_deref(), Some("other@2.0.0"));
    assert_eq!(policy("c"), None);
    let back: Template = serde_json::from_value(serde_json::to_value(&t).unwrap()).unwrap();
    assert_eq!(back, t);
}

#[test]
fn bad_hooks_and_policies_are_refused_with_their_location() {
    let e = err(
        "namespace: ns\nname: t\nversion: 1.0.0\nretry_policy: 'nope'\n\
         hooks:\n  - component: audit@0.1.0\n    events: [step.faild, 'step.fail*', 'job.*', custom.ok, 'custom.']\n\
         \x20 - {component: 'x@y', events: []}\n\
         \x20 - {component: a@1.0.0, events: '*', delivery: {max_attempts: 0}, limits: {fuel: 0}}\n\
         steps:\n  - {name: a, handler: h@1.0.0, retry_policy: 'bad policy'}\n",
    );
    let at = |loc: &str| {
        e.problems
            .iter()
            .find(|p| p.location == loc)
            .unwrap_or_else(|| panic!("no problem at {loc}: {e}"))
            .message
            .clone()
    };
    assert!(at("retry_policy").contains("'nope'"));
    assert!(at("hooks[0].events[0]").contains("not a known event"));
    assert!(at("hooks[0].events[1]").contains("not an event pattern"));
    assert!(at("hooks[0].events[2]").contains("names no event family"));
    assert!(at("hooks[0].events[4]").contains("not an event pattern"));
    assert!(
        !e.problems
            .iter()
            .any(|p| p.location == "hooks[0].events[3]")
    );
    assert!(at("hooks[1].component").contains("not semver"));
    assert!(at("hooks[1].events").contains("subscribes to no events"));
    assert!(at("hooks[2].delivery.max_attempts").contains("at least 1"));
    assert!(at("hooks[2].limits.fuel").contains("greater than 0"));
    assert!(at("steps[0] (a).retry_policy").contains("retry policy"));
}

#[test]
fn out_of_range_settings_name_the_field_and_the_maximum() {
    let e = err(&minimal(
        "  - name: a\n    handler: x@1.0.0\n    retry:\n      max_retry_after_ms: 9223372036854775807\n      max_attempts: 20000\n      backoff: { base_ms: 1, cap_ms: 99999999999999, multiplier: 5000.0 }\n    limits: { timeout_ms: 99999999999, memory_mb: 8192 }\n",
    ));
    for (location, maximum) in [
        ("steps[0] (a).retry.max_retry_after_ms", "2592000000"),
        ("steps[0] (a).retry.max_attempts", "10000"),
        ("steps[0] (a).retry.backoff.cap_ms", "2592000000"),
        ("steps[0] (a).retry.backoff.multiplier", "1000"),
        ("steps[0] (a).limits.timeout_ms", "86400000"),
        ("steps[0] (a).limits.memory_mb", "4096"),
    ] {
        let p = e
            .problems
            .iter()
            .find(|p| p.location.starts_with(location))
            .unwrap_or_else(|| panic!("no problem at {location}: {e}"));
        assert!(p.message.contains(maximum), "{location}: {}", p.message);
    }
    // The maxima themselves are accepted.
    Template::from_yaml(&minimal(
        "  - name: a\n    handler: x@1.0.0\n    retry: { max_retry_after_ms: 2592000000, max_attempts: 10000 }\n    limits: { timeout_ms: 86400000, memory_mb: 4096 }\n",
    ))
    .unwrap();
}

#[test]
fn components_lists_handlers_hooks_and_policies_once() {
    let t = Template::from_yaml(&format!(
        "{}retry_policy: smart@1.0.0\nhooks:\n  - {{ component: audit@0.1.0, events: ['*'] }}\n",
        minimal(
            "  - { name: a, handler: x@1.0.0 }\n  - { name: b, handler: x@1.0.0, retry_policy: other@2.0.0 }\n"
        )
    ))
    .unwrap();
    let names: Vec<String> = t.components().iter().map(|c| c.to_string()).collect();
    // The template's policy is resolved onto step a, which has none of its own.
    assert_eq!(
        names,
        ["x@1.0.0", "smart@1.0.0", "other@2.0.0", "audit@0.1.0"]
    );
}

#[test]
fn graph_problems_are_listed_with_every_other_problem() {
    let e = err(&minimal(concat!(
        "  - {name: a, handler: not-a-ref, depends_on: c}\n",
        "  - {name: b, handler: h@1.0.0, depends_on: [a, pack], limits: {fuel: 0}}\n",
        "  - {name: c, handler: h@1.0.0, depends_on: b}\n",
        "  - {name: d, handler: h@1.0.0, depends_on: d}\n",
    )));
    let locations: Vec<&str> = e.problems.iter().map(|p| p.location.as_str()).collect();
    assert!(locations.contains(&"steps[0] (a).handler"), "{e}");
    assert!(locations.contains(&"steps[1] (b).depends_on"), "{e}");
    assert!(e.mentions("step 'b' depends on unknown step 'pack'"), "{e}");
    assert!(e.mentions("dependency cycle: a -> b -> c -> a"), "{e}");
    assert!(e.mentions("dependency cycle: d -> d"), "{e}");
    assert!(e.problems.len() >= 5, "{e}");
}

#[test]
fn http_grants_secrets_and_limits_are_checked_where_they_are() {
    let t = Template::from_yaml(&minimal(
        "  - name: charge\n    handler: h@1.0.0\n    limits: {http_requests: 5, http_timeout_ms: 2000}\n    grants:\n      http:\n        - {url: 'https://api.stripe.test', methods: [POST], paths: ['/v1/charges*']}\n      secrets: {STRIPE_KEY: 'env:STRIPE_KEY'}\n",
    ))
    .unwrap();
    let g = &t.steps[0].grants;
    assert_eq!(g.http[0].paths, ["/v1/charges*"]);
    assert_eq!(g.secrets["STRIPE_KEY"], "env:STRIPE_KEY");
    assert_eq!(t.steps[0].limits.http_requests, Some(5));

    let e = err(&minimal(
        "  - name: a\n    handler: h@1.0.0\n    limits: {http_concurrency: 0, http_response_bytes: 99999999999}\n    grants:\n      http:\n        - {url: 'https://ok.test'}\n        - {url: 'api.test', methods: [GET, 'P OST'], paths: [v1]}\n      secrets: {KEY: 'vault:x', '1BAD': 'env:X'}\n",
    ));
    let locations: Vec<&str> = e.problems.iter().map(|p| p.location.as_str()).collect();
    for want in [
        "steps[0] (a).limits.http_concurrency",
        "steps[0] (a).limits.http_response_bytes",
        "steps[0] (a).grants.http[1].url",
        "steps[0] (a).grants.http[1].methods[1]",
        "steps[0] (a).grants.http[1].paths[0]",
        "steps[0] (a).grants.secrets.KEY",
        "steps[0] (a).grants.secrets.1BAD",
    ] {
        assert!(locations.contains(&want), "missing {want} in {e}");
    }
    assert!(!locations.iter().any(|l| l.contains("http[0]")), "{e}");
    // Secrets go only into HTTP headers: without an http grant they are a mistake.
    let e = err(&minimal(
        "  - name: a\n    handler: h@1.0.0\n    grants: {secrets: {K: 'env:K'}}\n",
    ));
    assert_eq!(e.problems[0].location, "steps[0] (a).grants.secrets");
}

#[test]
fn priorities_are_one_to_five_at_their_place() {
    let ok = Template::from_yaml(&format!(
        "priority: 2\n{}",
        minimal(
            "  - { name: a, handler: x@1.0.0, priority: 5 }\n  - { name: b, handler: x@1.0.0 }\n"
        )
    ))
    .unwrap();
    assert_eq!(ok.priority.map(|p| p.get()), Some(2));
    assert_eq!(ok.steps[0].priority.map(|p| p.get()), Some(5));
    assert_eq!(ok.steps[1].priority, None);
    // Unset, nothing is serialized: a template's identity is what it was before priorities.
    let plain = Template::from_yaml(&minimal("  - { name: a, handler: x@1.0.0 }\n")).unwrap();
    let json = serde_json::to_string(&plain).unwrap();
    assert!(!json.contains("priority"), "{json}");

    let e = err(&format!(
        "priority: 0\n{}",
        minimal("  - { name: a, handler: x@1.0.0, priority: 9 }\n")
    ));
    let found: Vec<(&str, &str)> = e
        .problems
        .iter()
        .map(|p| (p.location.as_str(), p.message.as_str()))
        .collect();
    assert_eq!(
        found,
        vec![
            (
                "priority",
                "0 is not a priority: expected a whole number from 1 (lowest) to 5 (highest)"
            ),
            (
                "steps[0] (a).priority",
                "9 is not a priority: expected a whole number from 1 (lowest) to 5 (highest)"
            ),
        ]
    );
}

#[test]
fn concurrency_is_checked_at_its_place() {
    use crate::concurrency::{Concurrency, Strategy};
    let ok = Template::from_yaml(&format!(
        "concurrency: {{ key: /customer_id, limit: 2, strategy: cancel_newest }}\n{}",
        minimal("  - { name: a, handler: x@1.0.0 }\n")
    ))
    .unwrap();
    assert_eq!(
        ok.concurrency,
        Some(Concurrency {
            key: "/customer_id".into(),
            limit: 2,
            strategy: Strategy::CancelNewest
        })
    );
    let queued = Template::from_yaml(&format!(
        "concurrency: {{ key: stripe, limit: 1 }}\n{}",
        minimal("  - { name: a, handler: x@1.0.0 }\n")
    ))
    .unwrap();
    assert_eq!(queued.concurrency.unwrap().strategy, Strategy::Queue);
    // Unset, nothing is serialized: a template's identity is what it was before keys.
    let plain = Template::from_yaml(&minimal("  - { name: a, handler: x@1.0.0 }\n")).unwrap();
    assert!(
        !serde_json::to_string(&plain)
            .unwrap()
            .contains("concurrency")
    );

    let e = err(&format!(
        "concurrency: {{ key: /, limit: 0, strategy: fifo }}\n{}",
        minimal("  - { name: a, handler: x@1.0.0 }\n")
    ));
    let found: Vec<(&str, &str)> = e
        .problems
        .iter()
        .map(|p| (p.location.as_str(), p.message.as_str()))
        .collect();
    assert_eq!(
        found,
        vec![
            (
                "concurrency.strategy",
                "unknown strategy 'fifo': expected one of queue, cancel_in_progress, cancel_newest"
            ),
            ("concurrency.key", "the pointer / names no field"),
            ("concurrency.limit", "0 is not a limit: expected 1 to 10000"),
        ]
    );
    let e = err(&format!(
        "concurrency: {{ key: '', limit: -1 }}\n{}",
        minimal("  - { name: a, handler: x@1.0.0 }\n")
    ));
    assert_eq!(e.problems.len(), 2, "{e}");
    assert_eq!(
        e.problems[1].message,
        "-1 is not a limit: expected 1 to 10000"
    );
    let e = err(&format!(
        "concurrency: {{ key: a, limit: 1, extra: 1 }}\n{}",
        minimal("  - { name: a, handler: x@1.0.0 }\n")
    ));
    assert!(e.to_string().contains("extra"), "{e}");
}
