//! Says things on every channel, steered by the task context, for the log tests:
//! `lines` log records (levels cycling trace..error, each naming its attempt and index),
//! `stdout_bytes` and `stderr_bytes` bytes on the standard streams (each stream starts with a
//! line naming the attempt), and `fail_first` fails the first attempt (retryable) so a step
//! has two attempts with their own logs.
use std::io::Write;

use tasker_guest_sdk::{Context, Handler, StepError, export_handler, json, log};

struct Chatty;

fn num(ctx: &Context, key: &str) -> usize {
    ctx.context.get(key).and_then(|v| v.as_u64()).unwrap_or(0) as usize
}

/// `bytes` bytes: a first line naming the stream and attempt, then filler lines.
fn stream_text(stream: &str, attempt: u32, bytes: usize) -> String {
    let mut s = format!("{stream} of attempt {attempt}\n");
    while s.len() < bytes {
        s.push_str("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n");
    }
    s.truncate(bytes.max(s.find('\n').map_or(0, |i| i + 1)));
    s
}

impl Handler for Chatty {
    fn handle(ctx: Context) -> Result<impl serde::Serialize, StepError> {
        let attempt = ctx.attempt;
        for i in 0..num(&ctx, "lines") {
            let msg = format!("line {i} of attempt {attempt}");
            match i % 5 {
                0 => log::trace(&msg),
                1 => log::debug(&msg),
                2 => log::info(&msg),
                3 => log::warn(&msg),
                _ => log::error(&msg),
            }
        }
        let out = num(&ctx, "stdout_bytes");
        if out > 0 {
            let _ = std::io::stdout().write_all(stream_text("stdout", attempt, out).as_bytes());
            let _ = std::io::stdout().flush();
        }
        let err = num(&ctx, "stderr_bytes");
        if err > 0 {
            let _ = std::io::stderr().write_all(stream_text("stderr", attempt, err).as_bytes());
            let _ = std::io::stderr().flush();
        }
        if ctx.context.get("fail_first") == Some(&json!(true)) && attempt == 1 {
            return Err(StepError::retryable("failing the first attempt on purpose"));
        }
        Ok(json!({ "attempt": attempt }))
    }
}

export_handler!(Chatty);
