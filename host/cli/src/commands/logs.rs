//! `tasker logs <step>`: what each attempt of a step said (log records, stdout, stderr), from
//! the store or, with `--server`, from `GET /v1/steps/{id}/logs`; `--follow` keeps printing
//! attempts as they are recorded until the step is done.

use std::future::Future;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use tasker_core::state::StepState;
use tasker_core::text::escape_control;
use tasker_store::{AttemptLog, AttemptLogRow, StepId, Store};

use crate::api::Api;
use crate::app::App;

/// How often `--follow` looks for new attempts.
const FOLLOW_POLL: Duration = Duration::from_millis(500);

/// One attempt as printed; also the shape of the API's `attempts` items.
#[derive(Debug, Clone, Deserialize)]
pub struct ShownAttempt {
    pub attempt: i64,
    pub outcome: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    #[serde(flatten)]
    pub log: AttemptLog,
}

impl From<AttemptLogRow> for ShownAttempt {
    fn from(r: AttemptLogRow) -> Self {
        ShownAttempt {
            attempt: r.attempt_no,
            outcome: r.outcome.as_str().to_owned(),
            started_at: r.started_at,
            finished_at: r.finished_at,
            log: r.log,
        }
    }
}

/// A step's state and its attempts with output, as one read sees them.
pub struct Snapshot {
    pub state: StepState,
    pub attempts: Vec<ShownAttempt>,
}

/// `--follow` stops at these: nothing runs the step again without an operator.
fn settled(state: StepState) -> bool {
    state.is_terminal() || state == StepState::Error
}

/// Writes one attempt: a heading, then each log record with its offset, then stdout and
/// stderr, then what the bounds dropped. Guest text is escaped so it cannot drive the
/// terminal.
pub fn render(a: &ShownAttempt, out: &mut impl Write) -> std::io::Result<()> {
    let wall_ms = (a.finished_at - a.started_at)
        .num_microseconds()
        .unwrap_or(0) as f64
        / 1000.0;
    writeln!(
        out,
        "── attempt {} · {} · started {} · {wall_ms:.1} ms",
        a.attempt,
        a.outcome,
        a.started_at.format("%Y-%m-%d %H:%M:%S%.3f UTC"),
    )?;
    let log = &a.log;
    if log.is_empty() {
        writeln!(out, "   (the handler said nothing)")?;
        return Ok(());
    }
    for l in &log.lines {
        writeln!(
            out,
            "   +{:>10.6}s {:<5} {}",
            l.at_us as f64 / 1e6,
            l.level.as_str(),
            escape_control(&l.message)
        )?;
    }
    for (name, text) in [("stdout", &log.stdout), ("stderr", &log.stderr)] {
        if text.is_empty() {
            continue;
        }
        writeln!(out, "   {name}:")?;
        for line in text.lines() {
            writeln!(out, "     {}", escape_control(line))?;
        }
    }
    if !log.http.is_empty() {
        writeln!(out, "   http:")?;
        for h in &log.http {
            let status = h.status.map_or_else(|| "-".to_string(), |s| s.to_string());
            let mut line = format!(
                "     +{:>10.6}s {} {} -> {status} ({} B sent, {} B received, {:.1} ms)",
                h.at_us as f64 / 1e6,
                h.method,
                h.url,
                h.request_bytes,
                h.response_bytes,
                h.duration_us as f64 / 1000.0
            );
            if h.refused {
                line.push_str(" refused");
            }
            if let Some(e) = &h.error {
                line.push_str(": ");
                line.push_str(e);
            }
            writeln!(out, "{}", escape_control(&line))?;
        }
    }
    let d = &log.dropped;
    if d.any() {
        let mut parts = Vec::new();
        if d.lines > 0 {
            parts.push(format!("{} log records", d.lines));
        }
        if d.stdout_bytes > 0 {
            parts.push(format!("{} bytes of stdout", d.stdout_bytes));
        }
        if d.stderr_bytes > 0 {
            parts.push(format!("{} bytes of stderr", d.stderr_bytes));
        }
        writeln!(
            out,
            "   dropped over the attempt's limits ([limits] max_logs, log_bytes, stdio_bytes): {}",
            parts.join(", ")
        )?;
    }
    Ok(())
}

/// Prints the attempts of one read, or (`follow`) every attempt as it is recorded until the
/// step settles.
async fn show<F, Fut>(mut read: F, attempt: Option<i64>, follow: bool) -> Result<ExitCode>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Snapshot>>,
{
    let mut shown: Option<i64> = None;
    loop {
        let snap = read().await?;
        let mut out = std::io::stdout().lock();
        let before = shown;
        for a in snap
            .attempts
            .iter()
            .filter(|a| before.is_none_or(|s| a.attempt > s))
        {
            render(a, &mut out)?;
            shown = Some(a.attempt);
        }
        out.flush()?;
        drop(out);
        // The state was read before the attempts: once it is settled, every attempt is in.
        if !follow || settled(snap.state) {
            if shown.is_none() {
                match attempt {
                    Some(n) => anyhow::bail!("no attempt {n} of this step ran"),
                    None => println!("no attempt has run yet (the step is {})", snap.state),
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        tokio::time::sleep(FOLLOW_POLL).await;
    }
}

impl App {
    /// `tasker logs` on the store.
    pub async fn logs(&self, step: StepId, attempt: Option<i64>, follow: bool) -> Result<ExitCode> {
        let store = self.store(1).await?;
        let read = || async {
            let row = store
                .step(step)
                .await?
                .with_context(|| format!("no step {step}"))?;
            let attempts = store.attempt_logs(step, attempt).await?;
            Ok(Snapshot {
                state: row.state,
                attempts: attempts.into_iter().map(ShownAttempt::from).collect(),
            })
        };
        show(read, attempt, follow).await
    }
}

#[derive(Deserialize)]
struct LogsBody {
    state: StepState,
    attempts: Vec<ShownAttempt>,
}

/// `tasker logs --server`.
pub async fn remote(api: &Api, step: i64, attempt: Option<i64>, follow: bool) -> Result<ExitCode> {
    let path = match attempt {
        Some(n) => format!("/v1/steps/{step}/logs?attempt={n}"),
        None => format!("/v1/steps/{step}/logs"),
    };
    let read = || async {
        let body: LogsBody =
            serde_json::from_value(api.get(&path).await?).context("the server's step logs")?;
        Ok(Snapshot {
            state: body.state,
            attempts: body.attempts,
        })
    };
    show(read, attempt, follow).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tasker_store::{LogDropped, LogLevel, LogLine};

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_700_000_000_000 + ms).unwrap()
    }

    fn shown(log: AttemptLog) -> String {
        let a = ShownAttempt {
            attempt: 2,
            outcome: "failed".into(),
            started_at: at(0),
            finished_at: at(3),
            log,
        };
        let mut out = Vec::new();
        render(&a, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn an_attempt_prints_its_records_streams_and_drops() {
        let text = shown(AttemptLog {
            lines: vec![LogLine {
                at_us: 1500,
                level: LogLevel::Warn,
                message: "careful".into(),
            }],
            stdout: "one\ntwo\n".into(),
            stderr: String::new(),
            dropped: LogDropped {
                lines: 4,
                stdout_bytes: 0,
                stderr_bytes: 9,
            },
            ..AttemptLog::default()
        });
        assert!(
            text.starts_with(
                "── attempt 2 · failed · started 2023-11-14 22:13:20.000 UTC · 3.0 ms\n"
            ),
            "{text}"
        );
        assert!(text.contains("   +  0.001500s warn  careful\n"), "{text}");
        assert!(text.contains("   stdout:\n     one\n     two\n"), "{text}");
        assert!(!text.contains("stderr:"), "{text}");
        assert!(text.contains("4 log records, 9 bytes of stderr"), "{text}");
    }

    #[test]
    fn http_requests_are_listed_with_refusals() {
        let text = shown(AttemptLog {
            http: vec![
                tasker_store::HttpRecord {
                    at_us: 2000,
                    method: "POST".into(),
                    url: "https://api.test/v1/charges".into(),
                    status: Some(429),
                    request_bytes: 12,
                    response_bytes: 30,
                    duration_us: 1500,
                    ..tasker_store::HttpRecord::default()
                },
                tasker_store::HttpRecord {
                    method: "GET".into(),
                    url: "https://evil.test/".into(),
                    refused: true,
                    error: Some("no http grant names https://evil.test:443".into()),
                    ..tasker_store::HttpRecord::default()
                },
            ],
            ..AttemptLog::default()
        });
        assert!(
            text.contains(
                "     +  0.002000s POST https://api.test/v1/charges -> 429 (12 B sent, 30 B received, 1.5 ms)\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("GET https://evil.test/ -> - (0 B sent, 0 B received, 0.0 ms) refused: no http grant"),
            "{text}"
        );
    }

    #[test]
    fn guest_text_cannot_drive_the_terminal() {
        let text = shown(AttemptLog {
            lines: vec![LogLine {
                at_us: 0,
                level: LogLevel::Info,
                message: "\u{1b}[2Jforged\nline".into(),
            }],
            stderr: "\u{1b}]0;title\u{7}\n".into(),
            ..AttemptLog::default()
        });
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{7}'),
            "{text:?}"
        );
        assert!(text.contains("\\u{1b}[2Jforged\\nline"), "{text}");
    }

    #[test]
    fn a_quiet_attempt_says_so() {
        assert!(shown(AttemptLog::default()).ends_with("(the handler said nothing)\n"));
    }
}
