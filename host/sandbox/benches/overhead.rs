//! Per-attempt overhead of a no-op handler, pooling vs on-demand allocation, and
//! precompiled-cache load vs compile.
//!
//! Run: `scripts/build-plugins.sh && cargo bench -p tasker-sandbox --bench overhead`
//! (`TASKER_BENCH_ITERS` sets the sample count, default 20000).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tasker_sandbox::{
    AllocatorChoice, AllocatorInUse, AttemptRequest, EngineConfig, Grants, Limits, Sandbox,
    SandboxConfig, StepContext,
};

fn plugin_dir() -> PathBuf {
    let dir = std::env::var_os("TASKER_PLUGIN_BUILD_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../plugins/target/wasm32-wasip2/release")
        });
    if !dir.join("noop.wasm").is_file() {
        eprintln!(
            "{}/noop.wasm is missing: run scripts/build-plugins.sh first",
            dir.display()
        );
        std::process::exit(2);
    }
    dir
}

fn request() -> AttemptRequest {
    AttemptRequest {
        plugin: "noop".parse().unwrap(),
        ctx: StepContext {
            task_id: "t".into(),
            step_name: "s".into(),
            attempt: 1,
            ..StepContext::default()
        },
        limits: Limits::default(),
        grants: Grants::default(),
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

struct Stats {
    median: Duration,
    p99: Duration,
    per_sec_2_threads: f64,
}

fn measure(
    rt: &tokio::runtime::Runtime,
    mt: &tokio::runtime::Runtime,
    sb: &Sandbox,
    iters: usize,
) -> Stats {
    let req = request();
    rt.block_on(async {
        for _ in 0..1000 {
            sb.run(req.clone()).await.expect("noop runs");
        }
    });
    let mut samples = Vec::with_capacity(iters);
    rt.block_on(async {
        for _ in 0..iters {
            let r = req.clone();
            let t = Instant::now();
            let out = sb.run(r).await;
            samples.push(t.elapsed());
            assert!(out.is_ok());
        }
    });
    samples.sort();
    // Throughput: many attempts in flight on a 2-worker runtime.
    let n = iters.min(20_000);
    let t = Instant::now();
    mt.block_on(async {
        let mut handles = Vec::with_capacity(n);
        for _ in 0..n {
            let (sb, r) = (sb.clone(), req.clone());
            handles.push(tokio::spawn(async move { sb.run(r).await.is_ok() }));
        }
        for h in handles {
            assert!(h.await.unwrap());
        }
    });
    Stats {
        median: pct(&samples, 0.5),
        p99: pct(&samples, 0.99),
        per_sec_2_threads: n as f64 / t.elapsed().as_secs_f64(),
    }
}

fn main() {
    // RUST_BACKTRACE makes every wasmtime error capture a native backtrace.
    // SAFETY: no other thread exists yet.
    unsafe { std::env::remove_var("RUST_BACKTRACE") };
    let iters: usize = std::env::var("TASKER_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("plugins");
    std::fs::create_dir(&dir).unwrap();
    std::fs::copy(plugin_dir().join("noop.wasm"), dir.join("noop.wasm")).unwrap();
    let cache = work.path().join("cache");

    let sandbox = |alloc: AllocatorChoice, cache: Option<PathBuf>| {
        let mut cfg = SandboxConfig::new(&dir);
        cfg.cache_dir = cache;
        cfg.engine = EngineConfig {
            allocator: alloc,
            ..EngineConfig::default()
        };
        let t = Instant::now();
        let sb = rt.block_on(Sandbox::new(cfg)).expect("sandbox").0;
        (sb, t.elapsed())
    };

    println!(
        "tasker-sandbox overhead benchmark: no-op handler, {iters} sequential attempts per allocator"
    );
    println!(
        "(one attempt = Sandbox::run: resolve plugin, fresh Store + WASI ctx, instantiate from InstancePre, call, classify)"
    );
    let (pool, _) = sandbox(AllocatorChoice::Pooling, None);
    assert_eq!(pool.engine().allocator(), &AllocatorInUse::Pooling);
    let p = measure(&rt, &mt, &pool, iters);
    drop(pool);
    let (od, _) = sandbox(AllocatorChoice::OnDemand, None);
    let o = measure(&rt, &mt, &od, iters);
    drop(od);
    println!("| allocator | median µs | p99 µs | attempts/s (2 tokio threads) |");
    println!("|---|---|---|---|");
    println!(
        "| pooling | {:.1} | {:.1} | {:.0} |",
        us(p.median),
        us(p.p99),
        p.per_sec_2_threads
    );
    println!(
        "| on-demand | {:.1} | {:.1} | {:.0} |",
        us(o.median),
        us(o.p99),
        o.per_sec_2_threads
    );
    println!(
        "on-demand / pooling median: {:.2}x",
        us(o.median) / us(p.median)
    );

    // Load: time `Registry::rescan` picking up one new file (read, hash, compile or
    // cache load, instantiate_pre), each time on a fresh engine so no in-memory state helps.
    let load = |round: usize, tag: &str| -> (Duration, bool) {
        let d = work.path().join(format!("load-{tag}-{round}"));
        std::fs::create_dir(&d).unwrap();
        let mut cfg = SandboxConfig::new(&d);
        cfg.cache_dir = Some(cache.clone());
        cfg.engine.allocator = AllocatorChoice::Pooling;
        let sb = rt.block_on(Sandbox::new(cfg)).unwrap().0;
        std::fs::copy(dir.join("noop.wasm"), d.join("noop.wasm")).unwrap();
        let t = Instant::now();
        let report = rt.block_on(sb.registry().rescan()).unwrap();
        let took = t.elapsed();
        assert_eq!(report.loaded.len(), 1);
        (took, sb.registry().plugins()[0].from_cache)
    };
    let mut compile = Duration::MAX;
    let mut cached = Duration::MAX;
    for round in 0..5 {
        let _ = std::fs::remove_dir_all(&cache);
        let (t, from_cache) = load(round, "cold");
        assert!(!from_cache);
        compile = compile.min(t);
        let (t, from_cache) = load(round, "warm");
        assert!(from_cache);
        cached = cached.min(t);
    }
    let (c, l) = (compile, cached);
    let size = std::fs::metadata(dir.join("noop.wasm")).unwrap().len();
    println!("plugin load ({size} byte component, best of 5, Registry::rescan of one new file):");
    println!("| path | ms |");
    println!("|---|---|");
    println!(
        "| compile + write cache + instantiate_pre | {:.3} |",
        us(c) / 1e3
    );
    println!(
        "| precompiled cache (mmap) + instantiate_pre | {:.3} |",
        us(l) / 1e3
    );
    println!("compile / cache: {:.1}x", us(c) / us(l).max(1.0));
}
