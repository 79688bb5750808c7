//! The mixed-language example (`examples/polyglot`: Rust, Python, C and JavaScript steps in
//! one DAG) through the real `tasker` binary against PostgreSQL.

use serde_json::{Value, json};
use tasker_core::error_kind::ErrorKind;
use tasker_core::state::{StepState, TaskState};
use tasker_sandbox::PluginHash;
use tasker_store::{AttemptOutcome, RetryDecision, Store, TaskId};
use tasker_tests::cli::*;

/// CRC-32 (IEEE), computed here independently of the C and Rust guests.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn hash_of_staged(handler: &str) -> String {
    let bytes = std::fs::read(plugin_dir().join(format!("{handler}.wasm"))).unwrap();
    PluginHash::of(&bytes).to_hex()
}

async fn the_polyglot_example_runs_rust_python_c_and_javascript_steps(db: Db) {
    let mut c = tasker(&db, &plugin_dir());
    c.args([
        "run",
        "examples/polyglot/polyglot.yaml",
        "--context",
        "@examples/polyglot/context.json",
        "--plain",
    ]);
    let out = run(c);
    assert!(out.status.success(), "tasker run failed");
    assert!(stderr(&out).contains("custom.batch_sealed"));

    let store = db.store().await;
    let task: i64 = count(&db, "SELECT min(id) FROM tasks").await;
    assert_eq!(
        store.task(TaskId::new(task)).await.unwrap().unwrap().state,
        TaskState::Complete
    );
    let steps = store.steps_of_task(TaskId::new(task)).await.unwrap();
    let result = |name: &str| -> Value {
        steps
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no step {name}"))
            .result
            .clone()
            .unwrap_or_else(|| panic!("step {name} has no result"))
    };

    // Attempt history: every step ran the staged component of its language once, except
    // `normalise`, whose first attempt raised an unexpected Python exception that the SDK
    // made retryable.
    let handlers = [
        ("ingest", "poly_ingest@0.1.0"),
        ("normalise", "py_normalise@0.1.0"),
        ("checksum", "c_checksum@0.1.0"),
        ("summary", "js_summary@0.1.0"),
        ("seal", "poly_seal@0.1.0"),
    ];
    assert_eq!(steps.len(), handlers.len());
    for (name, handler) in handlers {
        let s = steps.iter().find(|s| s.name == name).unwrap();
        assert_eq!(s.state, StepState::Complete, "{name}");
        let attempts = store.attempts_of_step(s.id).await.unwrap();
        let want = if name == "normalise" { 2 } else { 1 };
        assert_eq!(attempts.len(), want, "{name}: {attempts:?}");
        let hash = hash_of_staged(handler);
        for a in &attempts {
            assert_eq!(a.plugin_hash.as_deref(), Some(hash.as_str()), "{name}");
            assert!(a.fuel.unwrap_or(0) > 0, "{name}");
        }
        assert_eq!(attempts.last().unwrap().outcome, AttemptOutcome::Completed);
    }
    let normalise = steps.iter().find(|s| s.name == "normalise").unwrap();
    let attempts = store.attempts_of_step(normalise.id).await.unwrap();
    let first = &attempts[0];
    assert_eq!(first.outcome, AttemptOutcome::Failed);
    assert_eq!(first.error_kind, Some(ErrorKind::HandlerError));
    assert_eq!(first.retryable, Some(true));
    assert_eq!(first.decision, Some(RetryDecision::Retry));
    assert_eq!(
        first.message.as_deref(),
        Some("handler error (retryable): ConnectionError: reference data service unavailable")
    );
    assert!(attempts[1].started_at >= first.next_ready_at.unwrap());

    // Python: the records of examples/polyglot/context.json, validated and normalised
    // (half-even rounding to the cent, lower-cased emails, ISO dates, sorted by id).
    let canonical = "\
p-1001,ada.lovelace@example.com,GB,12050,2026-11-02
p-1002,grace@example.org,US,9900,2026-11-03
p-1004,linus@example.fi,NL,123450,2026-11-05
p-1008,margaret.hamilton@example.com,US,31100,2026-11-07
p-1009,jean@example.fr,FR,7526,2026-11-08
p-1010,dennis@example.de,DE,1,2026-11-09
";
    let norm = result("normalise");
    assert_eq!(norm["canonical"], canonical);
    let rejected: Vec<(u64, &str)> = norm["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["row"].as_u64().unwrap(), r["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(
        rejected,
        [
            (3, "email 'not-an-email' is not an address"),
            (5, "duplicate id p-1001"),
            (6, "amount '-5' must be positive"),
            (7, "country 'XX' is not one of DE, FR, GB, NL, US"),
            (8, "date '2026-13-01' is not an ISO 8601 date"),
            (12, "id is missing"),
        ]
    );

    // C: CRC-32 over the canonical lines, and the amount histogram (10,000-cent buckets,
    // the last of 6 open-ended).
    let crc = format!("{:08x}", crc32(canonical.as_bytes()));
    assert_eq!(
        result("checksum"),
        json!({
            "crc32": crc,
            "bytes": canonical.len(),
            "lines": 6,
            "bucket_cents": 10000,
            "histogram": [3, 1, 0, 1, 0, 1]
        })
    );

    // JavaScript: the summary.
    let total: u64 = 12050 + 9900 + 123450 + 31100 + 7526 + 1;
    let summary = result("summary");
    assert_eq!(summary["total_cents"], total);
    assert_eq!(
        summary["by_country"]["US"],
        json!({ "records": 2, "amount_cents": 41000 })
    );
    let text = summary["text"].as_str().unwrap();
    assert!(
        text.contains("6 valid records, 6 rejected, total EUR 1,840.27."),
        "{text}"
    );
    assert!(text.contains("| NL | 1 | EUR 1,234.50 |"), "{text}");

    // Rust: the seal cross-checks them all.
    let seal = result("seal");
    assert_eq!(seal["crc32"], crc);
    assert_eq!(seal["total_cents"], total);
    assert_eq!(
        (seal["records"].clone(), seal["rejected"].clone()),
        (json!(6), json!(6))
    );
    assert_eq!(seal["countries"], json!(["DE", "FR", "GB", "NL", "US"]));
    let report = seal["report"].as_str().unwrap();
    assert!(report.starts_with(text), "{report}");
    assert!(
        report.contains(&format!("Sealed: CRC-32 `{crc}` over 281 bytes (6 lines)")),
        "{report}"
    );
}

tasker_tests::cli_on_both_backends!(the_polyglot_example_runs_rust_python_c_and_javascript_steps,);
