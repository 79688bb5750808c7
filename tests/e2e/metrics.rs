//! Metrics reach a real scraper: Debian's Prometheus scrapes a `tasker worker
//! --metrics-listen` while it runs a workflow, and its HTTP API answers for the
//! completed-steps counter and the step-duration histogram of that workflow; `promtool check
//! metrics` accepts the scrape; the shipped Grafana dashboard's queries run on it and its
//! alerting rules load. `tasker serve` answers `/metrics` with `metrics:read`, or
//! without a token when `--public-metrics` says so.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tasker_store::Store;
use tasker_tests::cli::*;

const TEMPLATE: &str = "namespace: e2e\nname: scraped\nversion: 1.0.0\nsteps:\n  - { name: a, handler: echo@0.1.0 }\n  - { name: b, handler: echo@0.1.0, depends_on: [a] }\n  - { name: c, handler: echo@0.1.0, depends_on: [a] }\n";

/// Spawns `command` (stderr piped) and returns it with the first stderr line that starts
/// with `prefix`, minus the prefix; stderr keeps being drained.
fn spawn_reading(mut command: Command, prefix: &'static str) -> (KillOnDrop, String) {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("the process starts");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("child: {line}");
            if let Some(rest) = line.strip_prefix(prefix) {
                let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_owned());
            }
        }
    });
    let found = rx
        .recv_timeout(CALL_BOUND)
        .unwrap_or_else(|_| panic!("the process printed no line starting with '{prefix}'"));
    (KillOnDrop(child), found)
}

/// A loopback port nobody listens on now (Prometheus cannot report one it picked).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn need(program: &str) {
    assert!(
        Command::new(program).arg("--version").output().is_ok(),
        "{program} is not installed: scripts/test.sh installs Debian's prometheus package"
    );
}

/// Starts Prometheus scraping `target` (host:port) every 250 ms; returns it and its URL.
fn prometheus(dir: &Path, target: &str) -> (KillOnDrop, String) {
    need("prometheus");
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{ scrape_interval: 250ms, scrape_timeout: 200ms }}\n\
             scrape_configs:\n  - job_name: tasker\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus starts");
    (KillOnDrop(child), format!("http://127.0.0.1:{port}"))
}

/// The value of a PromQL query that returns one sample, once Prometheus has it.
async fn query(prom: &str, promql: &str) -> Option<f64> {
    let res = reqwest::Client::new()
        .get(format!("{prom}/api/v1/query"))
        .query(&[("query", promql)])
        .send()
        .await
        .ok()?;
    let body: Value = res.json().await.ok()?;
    let result = body["data"]["result"].as_array()?;
    let [one] = result.as_slice() else {
        return None;
    };
    one["value"][1].as_str()?.parse().ok()
}

/// Polls `promql` until it equals `want`.
async fn wait_for_value(prom: &str, promql: &str, want: f64) {
    let deadline = Instant::now() + CALL_BOUND;
    let mut last = None;
    while Instant::now() < deadline {
        last = query(prom, promql).await;
        if last == Some(want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{promql}: {last:?}, not {want}");
}

async fn prometheus_scrapes_a_worker(db: Db) {
    let dir = scratch("metrics-scrape");
    std::fs::write(dir.join("t.yaml"), TEMPLATE).unwrap();
    let mut c = tasker(&db, &plugin_dir());
    c.args([
        "worker",
        "--id",
        "scraped",
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    let (mut worker, url) = spawn_reading(c, "metrics on ");
    let target = url
        .strip_prefix("http://")
        .and_then(|u| u.strip_suffix("/metrics"))
        .expect("metrics on http://ADDR/metrics")
        .to_owned();
    let (_prom, prom) = prometheus(&dir, &target);

    let mut c = tasker(&db, &plugin_dir());
    c.args([
        "submit",
        &dir.join("t.yaml").display().to_string(),
        "--wait",
    ]);
    let out = run(c);
    assert!(out.status.success(), "{}", stderr(&out));

    let of = "template=\"e2e/scraped@1.0.0\"";
    wait_for_value(
        &prom,
        &format!("sum(tasker_steps_completed_total{{{of}}})"),
        3.0,
    )
    .await;
    wait_for_value(
        &prom,
        &format!("sum(tasker_step_duration_seconds_count{{{of},outcome=\"completed\"}})"),
        3.0,
    )
    .await;
    wait_for_value(
        &prom,
        &format!("sum(tasker_step_duration_seconds_bucket{{{of},le=\"+Inf\"}})"),
        3.0,
    )
    .await;
    // A quantile from the histogram's buckets: a real number of seconds.
    let p50 = query(
        &prom,
        &format!(
            "histogram_quantile(0.5, sum by (le) (tasker_step_duration_seconds_bucket{{{of}}}))"
        ),
    )
    .await
    .expect("a median step duration");
    assert!(p50 > 0.0 && p50 < 60.0, "{p50}");
    wait_for_value(&prom, "up{job=\"tasker\"}", 1.0).await;

    // The shipped dashboard: every query is valid PromQL to this Prometheus, names only
    // catalogued metrics, and the completed-steps panel has this run's series.
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("examples/observability/grafana-dashboard.json"))
            .unwrap(),
    )
    .unwrap();
    let exprs: Vec<String> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().clone())
        .map(|t| t["expr"].as_str().unwrap().replace("$template", ".*"))
        .collect();
    assert!(exprs.len() >= 10, "{exprs:?}");
    for e in &exprs {
        for name in e
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("tasker_"))
        {
            let base = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            assert!(
                tasker_core::metrics::find(base).is_some(),
                "the dashboard names {name}, which is not in the catalogue"
            );
        }
        let res: Value = reqwest::Client::new()
            .get(format!("{prom}/api/v1/query"))
            .query(&[("query", e.as_str())])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(res["status"], "success", "{e}: {res}");
    }
    let completed = exprs
        .iter()
        .find(|e| e.contains("rate(tasker_steps_completed_total"))
        .unwrap();
    let deadline = Instant::now() + CALL_BOUND;
    // A series for this run's template (its rate may be 0: the counter appeared at its
    // final value between two scrapes).
    while query(&prom, completed).await.is_none() {
        assert!(Instant::now() < deadline, "no series for {completed}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The shipped alerting rules load.
    need("promtool");
    let rules = root().join("examples/observability/alerts.yml");
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // The exposition itself passes promtool's checks.
    need("promtool");
    let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let checked = check.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    stop_gracefully(&mut worker.0);
}

/// `tasker serve`: `/metrics` needs `metrics:read` unless `--public-metrics`.
async fn serve_metrics_need_a_token_unless_public(db: Db) {
    let mut c = tasker(&db, &plugin_dir());
    c.args(["serve", "--listen", "127.0.0.1:0"]);
    let (mut closed, base) = spawn_reading(c, "serving ");
    let res = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(res.status(), reqwest::StatusCode::UNAUTHORIZED);
    stop_gracefully(&mut closed.0);

    let mut c = tasker(&db, &plugin_dir());
    c.args(["serve", "--listen", "127.0.0.1:0", "--public-metrics"]);
    let (mut open, base) = spawn_reading(c, "serving ");
    let res = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(res.status(), reqwest::StatusCode::OK);
    let text = res.text().await.unwrap();
    assert!(
        text.contains("tasker_queue_steps{state=\"ready\"}"),
        "{text}"
    );
    // Only the metrics: the rest still needs a token.
    let res = reqwest::get(format!("{base}/v1/tasks")).await.unwrap();
    assert_eq!(res.status(), reqwest::StatusCode::UNAUTHORIZED);
    stop_gracefully(&mut open.0);
}

/// A metrics address that cannot be listened on is named, and the worker does not start.
async fn a_taken_metrics_address_is_refused_by_name(db: Db) {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    for command in [vec!["worker", "--id", "taken"], vec!["run", "t.yaml"]] {
        let dir = scratch("metrics-taken");
        std::fs::write(dir.join("t.yaml"), TEMPLATE).unwrap();
        let mut c = tasker(&db, &plugin_dir());
        c.current_dir(&dir)
            .args(&command)
            .args(["--metrics-listen", &addr]);
        let out = run(c);
        assert_eq!(out.status.code(), Some(2), "{command:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!("cannot listen on {addr} for metrics")),
            "{command:?}: {}",
            stderr(&out)
        );
    }
    // Refused before anything was written: no task.
    let store = db.store().await;
    let page = store
        .list_tasks(
            &Default::default(),
            tasker_store::TaskPageRequest {
                before: None,
                limit: 10,
            },
        )
        .await
        .unwrap();
    assert!(page.items.is_empty(), "{:?}", page.items);
}

tasker_tests::cli_on_both_backends!(
    a_taken_metrics_address_is_refused_by_name,
    prometheus_scrapes_a_worker,
    serve_metrics_need_a_token_unless_public,
);
