//! The sandbox holds for every guest language: the hostile Python and JavaScript guests
//! give the same typed errors as the Rust ones, and the Python, JavaScript and C example
//! handlers run. Python and JS components are 12-18 MB: the test binary loads each once
//! (through the shared precompiled cache) into one sandbox.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::*;
use serde_json::{Value, json};
use tasker_sandbox::{
    AttemptGrants, AttemptLimits, AttemptRequest, EngineConfig, HostDir, Sandbox, SandboxConfig,
    SandboxError,
};

/// Rust test guests (from the plugin build dir) that the cross-language cases compare with.
const RUST: &[&str] = &[
    "noop",
    "echo",
    "hostile_loop",
    "hostile_memory",
    "hostile_read_outside",
    "hostile_panic",
];
/// Python, JS and C components staged by scripts/build-plugins.sh.
const STAGED: &[(&str, &str)] = &[
    ("dist-hostile", "hostile_py@0.1.0.wasm"),
    ("dist-hostile", "hostile_js@0.1.0.wasm"),
    ("dist", "py_normalise@0.1.0.wasm"),
    ("dist", "js_summary@0.1.0.wasm"),
    ("dist", "c_checksum@0.1.0.wasm"),
];

fn plugins_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../plugins")
}

fn staged(dir: &str, file: &str) -> PathBuf {
    let p = plugins_root().join(dir).join(file);
    assert!(
        p.is_file(),
        "{} is missing: run scripts/install-toolchains.sh and scripts/build-plugins.sh",
        p.display()
    );
    p
}

/// One directory with just the plugins these tests use. It stays for the life of the test
/// binary: plugins compile on first use, from their files.
fn polyglot_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("tasker-polyglot-plugins");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for name in RUST {
        std::fs::copy(plugin_file(name), dir.join(format!("{name}.wasm"))).unwrap();
    }
    for (sub, file) in STAGED {
        std::fs::copy(staged(sub, file), dir.join(file)).unwrap();
    }
    dir
}

fn sandbox() -> &'static Sandbox {
    static SB: OnceLock<Sandbox> = OnceLock::new();
    SB.get_or_init(|| {
        let dir = polyglot_dir();
        let mut cfg = SandboxConfig::new(&dir);
        cfg.cache_dir = Some(cache_dir());
        cfg.engine = EngineConfig {
            max_concurrent_attempts: 32,
            ..EngineConfig::default()
        };
        let sb = build(cfg);
        let rejected = sb.registry().rejected();
        assert!(rejected.is_empty(), "{rejected:?}");
        sb
    })
}

/// The same attack in each language: (plugin, config).
fn attack(attack: &str) -> Vec<(&'static str, Value)> {
    let rust = match attack {
        "loop" => "hostile_loop",
        "memory" => "hostile_memory",
        "read" => "hostile_read_outside",
        "panic" => "hostile_panic",
        _ => unreachable!(),
    };
    vec![
        (rust, json!({})),
        ("hostile_py", json!({ "attack": attack })),
        ("hostile_js", json!({ "attack": attack })),
    ]
}

#[tokio::test]
async fn an_infinite_loop_times_out_in_every_language() {
    let sb = sandbox();
    for (plugin, config) in attack("loop") {
        let l = AttemptLimits {
            timeout_ms: Some(300),
            fuel: Some(100_000_000_000),
            ..AttemptLimits::default()
        };
        let f = run_err(sb, request(plugin, config, l, AttemptGrants::default())).await;
        assert_eq!(f.kind(), "timeout", "{plugin}: {}", f.error);
        assert!(f.is_retryable());
        let wall = f.report.accounting.wall_time_us;
        assert!(
            (300_000..5_000_000).contains(&wall),
            "{plugin}: deadline 300 ms, took {wall} µs"
        );
        assert!(
            f.report.accounting.fuel_consumed > 1_000_000,
            "{plugin}: {:?}",
            f.report.accounting
        );
    }
    assert_good_still_runs(sb).await;
}

#[tokio::test]
async fn an_infinite_loop_runs_out_of_fuel_in_every_language() {
    let sb = sandbox();
    for (plugin, config) in attack("loop") {
        // Enough for the interpreters to reach the loop (their `raise` path fits easily),
        // far less than the loop burns before the deadline.
        let budget = 200_000_000;
        let l = AttemptLimits {
            fuel: Some(budget),
            timeout_ms: Some(60_000),
            ..AttemptLimits::default()
        };
        let f = run_err(sb, request(plugin, config, l, AttemptGrants::default())).await;
        assert_eq!(f.kind(), "out_of_fuel", "{plugin}: {}", f.error);
        assert!(!f.is_retryable());
        assert_eq!(f.report.accounting.fuel_consumed, budget, "{plugin}");
    }
    assert_good_still_runs(sb).await;
}

#[tokio::test]
async fn a_memory_bomb_is_out_of_memory_in_every_language() {
    let sb = sandbox();
    for (plugin, config) in attack("memory") {
        // The interpreters start with a large heap: the cap is what this guest uses for a
        // trivial call plus 32 MiB, so the bomb (not the start-up) must hit it.
        let base = if plugin == "hostile_memory" {
            0
        } else {
            let f = run_err(
                sb,
                request(
                    plugin,
                    json!({ "attack": "raise" }),
                    AttemptLimits::default(),
                    AttemptGrants::default(),
                ),
            )
            .await;
            assert_eq!(f.kind(), "handler_error", "{plugin}: {}", f.error);
            f.report.accounting.peak_memory_bytes
        };
        let cap = (base + (32 << 20)).next_multiple_of(64 << 10);
        let l = AttemptLimits {
            memory_bytes: Some(cap),
            timeout_ms: Some(30_000),
            ..AttemptLimits::default()
        };
        let f = run_err(sb, request(plugin, config, l, AttemptGrants::default())).await;
        eprintln!(
            "{plugin}: {} (peak {})",
            f.error, f.report.accounting.peak_memory_bytes
        );
        assert_eq!(f.kind(), "out_of_memory", "{plugin}: {}", f.error);
        assert!(!f.is_retryable());
        let SandboxError::OutOfMemory {
            requested_bytes,
            limit_bytes,
        } = &f.error
        else {
            unreachable!()
        };
        assert_eq!(*limit_bytes, cap, "{plugin}");
        assert!(*requested_bytes > cap, "{plugin}: {requested_bytes}");
        let peak = f.report.accounting.peak_memory_bytes;
        assert!(
            peak > base + (16 << 20) && peak <= cap,
            "{plugin}: base {base}, peak {peak}, cap {cap}"
        );
    }
    assert_good_still_runs(sb).await;
}

fn input_dir() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("input")).unwrap();
    std::fs::write(root.path().join("input/a.txt"), "one two three").unwrap();
    std::fs::write(root.path().join("secret.txt"), "the host's secret").unwrap();
    root
}

fn ro_input(root: &Path) -> AttemptGrants {
    AttemptGrants {
        dirs: vec![HostDir {
            host: root.join("input"),
            guest: "/input".into(),
            writable: false,
        }],
        ..AttemptGrants::default()
    }
}

#[tokio::test]
async fn reading_outside_the_grant_is_denied_in_every_language() {
    let sb = sandbox();
    let root = input_dir();
    for (plugin, attack_config) in attack("read") {
        // Through the preopen: the host's cap-std refuses the escape and records it.
        let mut config = attack_config.clone();
        config["paths"] = json!(["/input/../secret.txt"]);
        let f = run_err(
            sb,
            request(
                plugin,
                config,
                AttemptLimits::default(),
                ro_input(root.path()),
            ),
        )
        .await;
        eprintln!("{plugin} /input/../secret.txt: {}", f.error);
        assert_eq!(f.kind(), "capability_denied", "{plugin}: {}", f.error);
        assert!(!f.is_retryable());
        let SandboxError::CapabilityDenied { detected_by, .. } = &f.error else {
            unreachable!()
        };
        assert_eq!(detected_by, "host", "{plugin}");
        assert!(!f.error.to_string().contains("the host's secret"));
        // Outside every preopen the guest's libc fails the path itself (ENOENT) before the
        // host sees a call: the guest's own error, and no denial (the host refused nothing).
        for path in ["/etc/passwd", "../secret.txt"] {
            let mut config = attack_config.clone();
            config["paths"] = json!([path]);
            let f = run_err(
                sb,
                request(
                    plugin,
                    config,
                    AttemptLimits::default(),
                    ro_input(root.path()),
                ),
            )
            .await;
            eprintln!("{plugin} {path}: {}", f.error);
            assert_eq!(f.kind(), "handler_error", "{plugin} {path}: {}", f.error);
            assert!(f.report.denials.is_empty(), "{plugin} {path}");
            assert!(!f.error.to_string().contains("the host's secret"));
        }
        // The grant itself works.
        let mut config = attack_config.clone();
        config["paths"] = json!(["/input/a.txt"]);
        let out = run_ok(
            sb,
            request(
                plugin,
                config,
                AttemptLimits::default(),
                ro_input(root.path()),
            ),
        )
        .await;
        assert_eq!(out.output, json!(["one two three"]), "{plugin}");
    }
    assert_good_still_runs(sb).await;
}

#[tokio::test]
async fn an_uncaught_exception_or_panic_is_a_trap_in_every_language() {
    let sb = sandbox();
    for (plugin, config) in attack("panic") {
        let f = run_err(
            sb,
            request(
                plugin,
                config,
                AttemptLimits::default(),
                AttemptGrants::default(),
            ),
        )
        .await;
        eprintln!("{plugin}: {} / stderr: {}", f.error, f.report.stderr);
        assert_eq!(f.kind(), "trap", "{plugin}: {}", f.error);
        assert!(f.is_retryable());
        // The guest's own words reach the error.
        let SandboxError::Trap { message, .. } = &f.error else {
            unreachable!()
        };
        match plugin {
            "hostile_py" => assert_eq!(
                message,
                "uncaught Python exception: RuntimeError: boom: uncaught on attempt 1"
            ),
            "hostile_js" => assert!(
                message.contains("(stderr: ") && message.contains("boom: uncaught on attempt 1"),
                "{message}"
            ),
            _ => assert!(
                message.contains("boom: the guest gave up on attempt 1"),
                "{message}"
            ),
        }
    }
    assert_good_still_runs(sb).await;
}

#[tokio::test]
async fn an_exception_through_the_sdk_is_a_retryable_handler_error() {
    let sb = sandbox();
    for (plugin, prefix) in [("hostile_py", "RuntimeError: "), ("hostile_js", "Error: ")] {
        let f = run_err(
            sb,
            request(
                plugin,
                json!({ "attack": "raise" }),
                AttemptLimits::default(),
                AttemptGrants::default(),
            ),
        )
        .await;
        assert_eq!(f.kind(), "handler_error", "{plugin}: {}", f.error);
        assert!(f.is_retryable(), "{plugin}");
        assert_eq!(
            f.error.to_string(),
            format!("handler error (retryable): {prefix}boom: the guest gave up on attempt 1"),
            "{plugin}"
        );
        // The SDK logs where it happened.
        assert!(
            f.report
                .logs
                .iter()
                .any(|l| l.level == "error" && l.message.contains("boom")),
            "{plugin}: {:?}",
            f.report.logs
        );
        // A `Retryable` with a server-requested delay keeps it.
        let f = run_err(
            sb,
            request(
                plugin,
                json!({ "attack": "retry_later", "retry_after_ms": 250 }),
                AttemptLimits::default(),
                AttemptGrants::default(),
            ),
        )
        .await;
        assert_eq!(f.kind(), "handler_error", "{plugin}: {}", f.error);
        assert!(f.is_retryable(), "{plugin}");
        assert_eq!(f.error.retry_after_ms(), Some(250), "{plugin}");
        assert_eq!(
            f.error.to_string(),
            "handler error (retryable): rate limited",
            "{plugin}"
        );
        // A `Permanent` is not retried.
        let f = run_err(
            sb,
            request(
                plugin,
                json!({ "attack": "nonsense" }),
                AttemptLimits::default(),
                AttemptGrants::default(),
            ),
        )
        .await;
        assert_eq!(f.kind(), "handler_error", "{plugin}");
        assert!(!f.is_retryable(), "{plugin}");
        assert!(
            f.error.to_string().contains("unknown attack"),
            "{plugin}: {}",
            f.error
        );
    }
}

/// Raw records as the `ingest` step passes them on.
fn ingested() -> Value {
    json!({
        "batch_id": "b-1",
        "currency": "EUR",
        "records": [
            { "row": 1, "id": "c-2", "email": " Grace@Example.ORG ", "country": "us", "amount": "1,234.5", "date": "2026-11-03T10:00:00" },
            { "row": 2, "id": "c-1", "email": "ada@example.com", "country": "GB", "amount": "0.125", "date": "2026-11-02" },
            { "row": 3, "id": "c-3", "email": "not-an-email", "country": "GB", "amount": "1", "date": "2026-11-02" },
            { "row": 4, "id": "c-1", "email": "ada@example.com", "country": "GB", "amount": "5", "date": "2026-11-02" },
            { "row": 5, "id": "c-4", "email": "x@example.com", "country": "GB", "amount": "-1", "date": "2026-11-02" },
            { "row": 6, "id": "c-5", "email": "y@example.com", "country": "GB", "amount": "2", "date": "2026-13-40" }
        ]
    })
}

fn with_parents(mut r: AttemptRequest, parents: &[(&str, Value)]) -> AttemptRequest {
    r.ctx.parent_results = parents
        .iter()
        .map(|(n, v)| (n.to_string(), v.clone()))
        .collect();
    r
}

#[tokio::test]
async fn the_python_javascript_and_c_handlers_work() {
    let sb = sandbox();
    // Python: validate and normalise.
    let r = with_parents(
        request(
            "py_normalise",
            json!({ "countries": ["GB", "US"] }),
            AttemptLimits::default(),
            AttemptGrants::default(),
        ),
        &[("ingest", ingested())],
    );
    let norm = run_ok(sb, r).await.output;
    assert_eq!(
        norm["valid"],
        json!([
            { "id": "c-1", "email": "ada@example.com", "country": "GB", "amount_cents": 12, "date": "2026-11-02" },
            { "id": "c-2", "email": "grace@example.org", "country": "US", "amount_cents": 123450, "date": "2026-11-03" }
        ])
    );
    let reasons: Vec<(i64, String)> = norm["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["row"].as_i64().unwrap(),
                r["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    assert!(reasons[0].0 == 3 && reasons[0].1.contains("not an address"));
    assert!(reasons[1].0 == 4 && reasons[1].1.contains("duplicate id c-1"));
    assert!(reasons[2].0 == 5 && reasons[2].1.contains("must be positive"));
    assert!(reasons[3].0 == 6 && reasons[3].1.contains("not an ISO 8601 date"));
    let canonical =
        "c-1,ada@example.com,GB,12,2026-11-02\nc-2,grace@example.org,US,123450,2026-11-03\n";
    assert_eq!(norm["canonical"], canonical);

    // C: checksum and histogram over the canonical payload.
    let r = with_parents(
        request(
            "c_checksum",
            json!({ "bucket_cents": 50000, "max_buckets": 2 }),
            AttemptLimits::default(),
            AttemptGrants::default(),
        ),
        &[("normalise", norm.clone())],
    );
    let sums = run_ok(sb, r).await.output;
    assert_eq!(
        sums,
        json!({
            "crc32": format!("{:08x}", crc32(canonical.as_bytes())),
            "bytes": canonical.len(),
            "lines": 2,
            "bucket_cents": 50000,
            // 12 -> bucket 0; 123450 -> bucket 2, clamped into the last of 2.
            "histogram": [1, 1]
        })
    );
    // Bad config is a permanent error naming the field.
    let r = with_parents(
        request(
            "c_checksum",
            json!({ "bucket_cents": 0 }),
            AttemptLimits::default(),
            AttemptGrants::default(),
        ),
        &[("normalise", norm.clone())],
    );
    let f = run_err(sb, r).await;
    assert_eq!(f.kind(), "handler_error");
    assert!(!f.is_retryable());
    assert!(
        f.error.to_string().contains("`bucket_cents`"),
        "{}",
        f.error
    );

    // JavaScript: the summary.
    let r = with_parents(
        request(
            "js_summary",
            json!({}),
            AttemptLimits::default(),
            AttemptGrants::default(),
        ),
        &[("normalise", norm), ("checksum", sums.clone())],
    );
    let out = run_ok(sb, r).await;
    let summary = out.output;
    assert_eq!(summary["total_cents"], 123462);
    assert_eq!(
        summary["by_country"],
        json!({ "GB": { "records": 1, "amount_cents": 12 }, "US": { "records": 1, "amount_cents": 123450 } })
    );
    let text = summary["text"].as_str().unwrap();
    assert!(text.starts_with("# Batch b-1\n"), "{text}");
    assert!(
        text.contains("2 valid records, 4 rejected, total EUR 1,234.62."),
        "{text}"
    );
    assert!(text.contains("| US | 1 | EUR 1,234.50 |"), "{text}");
    assert!(
        text.contains(&format!("CRC-32 `{}`", sums["crc32"].as_str().unwrap())),
        "{text}"
    );
    assert!(text.contains("- row 4 (c-1): duplicate id c-1"), "{text}");
    assert_eq!(out.report.logs.len(), 1, "{:?}", out.report.logs);
}

/// The C SDK's JSON reader on awkward input: fields after nested values holding braces and
/// quotes, and a payload with escapes and multi-byte UTF-8 that must be decoded exactly.
#[tokio::test]
async fn the_c_sdk_reads_json_fields_and_strings_exactly() {
    let sb = sandbox();
    let canonical = "q\"uo\\te,tab\there,é😀,70000,x\n\u{1}id,b,c,5,d\n";
    let parent = json!({
        "a_first": { "canonical": "not this one", "list": [1, "}", { "x": "]\"" }] },
        "b_escaped \" key": "{",
        "canonical": canonical,
        "z_after": null
    });
    let r = with_parents(
        request(
            "c_checksum",
            json!({ "a": [1, { "bucket_cents": "}" }], "bucket_cents": 20000, "max_buckets": 5 }),
            AttemptLimits::default(),
            AttemptGrants::default(),
        ),
        &[("normalise", parent)],
    );
    let out = run_ok(sb, r).await.output;
    assert_eq!(
        out,
        json!({
            "crc32": format!("{:08x}", crc32(canonical.as_bytes())),
            "bytes": canonical.len(),
            "lines": 2,
            "bucket_cents": 20000,
            "histogram": [1, 0, 0, 1]
        })
    );
    // A payload line without a numeric amount is named in a permanent error.
    let r = with_parents(
        request(
            "c_checksum",
            json!({}),
            AttemptLimits::default(),
            AttemptGrants::default(),
        ),
        &[(
            "normalise",
            json!({ "canonical": "a,b,c,5,d\na,b,c,x,d\n" }),
        )],
    );
    let f = run_err(sb, r).await;
    assert_eq!(f.kind(), "handler_error");
    assert!(!f.is_retryable());
    assert_eq!(
        f.error.to_string(),
        "handler error (permanent): payload line 2 has no amount in its 4th field"
    );
}

/// CRC-32 (IEEE), computed here independently of the C guest.
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

/// A large component's first load compiles on a blocking thread, once per hash, without
/// holding up attempts of plugins already loaded; a second engine loads it from the cache.
#[test]
fn large_components_compile_once_off_the_runtime_and_then_load_from_cache() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let cache = tempfile::tempdir().unwrap();
        std::fs::copy(plugin_file("noop"), dir.path().join("noop.wasm")).unwrap();
        let mut cfg = SandboxConfig::new(dir.path());
        cfg.cache_dir = Some(cache.path().to_path_buf());
        cfg.engine.max_concurrent_attempts = 8;
        let sb = Sandbox::new(cfg.clone()).await.unwrap().0;
        // Compiled on first use, not at start.
        assert_eq!(sb.registry().stats().compiles, 0);

        // The same JS component under two names: one hash.
        let js = staged("dist-hostile", "hostile_js@0.1.0.wasm");
        std::fs::copy(&js, dir.path().join("js_a@1.0.0.wasm")).unwrap();
        std::fs::copy(&js, dir.path().join("js_b@1.0.0.wasm")).unwrap();
        let scan = {
            let reg = sb.registry().clone();
            tokio::spawn(async move { reg.rescan().await })
        };
        // One runtime thread: if compiling ran on it, this sleep and the attempts below
        // would only get the thread back once the compile was done.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let mut done_while_compiling = 0;
        for _ in 0..20 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            run_ok(
                &sb,
                request(
                    "noop",
                    json!({}),
                    AttemptLimits::default(),
                    AttemptGrants::default(),
                ),
            )
            .await;
            if !scan.is_finished() {
                done_while_compiling += 1;
            }
        }
        assert_eq!(
            done_while_compiling, 20,
            "attempts were held up by the first load"
        );
        let report = scan.await.unwrap().unwrap();
        assert_eq!(report.loaded.len(), 2, "{report:?}");
        assert_eq!(report.loaded[0].1, report.loaded[1].1);
        let s = sb.registry().stats();
        assert_eq!((s.compiles, s.cache_loads), (2, 0), "noop + js once: {s:?}");
        let f = run_err(
            &sb,
            request(
                "js_b",
                json!({ "attack": "raise" }),
                AttemptLimits::default(),
                AttemptGrants::default(),
            ),
        )
        .await;
        assert_eq!(f.kind(), "handler_error", "{}", f.error);

        // A fresh engine with the same cache: no compile.
        let sb2 = Sandbox::new(cfg).await.unwrap().0;
        let s = sb2.registry().stats();
        assert_eq!((s.compiles, s.cache_loads), (0, 2), "{s:?}");
        assert!(sb2.registry().plugins().iter().all(|p| p.from_cache));
        let f = run_err(
            &sb2,
            request(
                "js_a",
                json!({ "attack": "raise" }),
                AttemptLimits::default(),
                AttemptGrants::default(),
            ),
        )
        .await;
        assert_eq!(f.kind(), "handler_error", "{}", f.error);
    });
}
