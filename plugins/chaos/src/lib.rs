//! The chaos test's handler. Every execution first creates one empty file,
//! `/count/<task>.<step>.<attempt>.<n>`, in a granted `rw` directory shared by every worker
//! process, so the test can count executions that no completed or failed attempt accounts
//! for. A file each (created with O_EXCL) rather than lines appended to one file: appends
//! from several processes through WASI are not guaranteed to be atomic, and a lost line
//! would hide an execution. The task
//! context steers it: `slow_ms` sleeps that long, `fail_first` fails the first attempt of
//! every step (retryable) so that retries happen under the chaos too.
use tasker_guest_sdk::{Context, Handler, StepError, export_handler, json};

struct Chaos;

impl Handler for Chaos {
    fn handle(ctx: Context) -> Result<impl serde::Serialize, StepError> {
        let stem = format!("/count/{}.{}.{}", ctx.task_id, ctx.step_name, ctx.attempt);
        // A lost lease runs the same attempt number again: take the next free suffix.
        let mut n = 0;
        loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(format!("{stem}.{n}"))
            {
                Ok(_) => break,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => n += 1,
                Err(e) => {
                    return Err(StepError::retryable(format!(
                        "cannot count the execution: {e}"
                    )));
                }
            }
        }
        if let Some(ms) = ctx.context.get("slow_ms").and_then(|v| v.as_u64()) {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
        if ctx.context.get("fail_first") == Some(&json!(true)) && ctx.attempt == 1 {
            return Err(StepError::retryable("failing the first attempt on purpose"));
        }
        Ok(json!({ "step": ctx.step_name, "attempt": ctx.attempt }))
    }
}

export_handler!(Chaos);
