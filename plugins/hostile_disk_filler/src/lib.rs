//! Attack: fill a writable grant: write, append, grow with set_len, or create entries.
use serde::Deserialize;
use std::io::Write;
use tasker_guest_sdk::{Context, Handler, StepError, export_handler};

#[derive(Deserialize)]
struct Config {
    /// Directory inside a writable grant.
    dir: String,
    /// "write", "append", "set_len", "entries" or "creates".
    mode: String,
}

struct Filler;

fn fill(cfg: &Config) -> std::io::Result<u64> {
    let chunk = vec![b'x'; 1 << 20];
    let mut written = 0u64;
    let path = format!("{}/fill.bin", cfg.dir);
    // Bounded so a host without a quota ends the attack (at 1 GiB).
    match cfg.mode.as_str() {
        "write" => {
            let mut f = std::fs::File::create(&path)?;
            while written < 1 << 30 {
                f.write_all(&chunk)?;
                written += chunk.len() as u64;
            }
        }
        "append" => {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)?;
            while written < 1 << 30 {
                f.write_all(&chunk)?;
                written += chunk.len() as u64;
            }
        }
        "set_len" => {
            let f = std::fs::File::create(&path)?;
            f.set_len(1 << 40)?;
            written = 1 << 40;
        }
        "entries" => {
            while written < 1_000_000 {
                std::fs::create_dir(format!("{}/d{written}", cfg.dir))?;
                written += 1;
            }
        }
        // Create files until refused, then go on trying 20,000 more times: each refusal
        // must give back what it reserved.
        "creates" => {
            let mut refusal = None;
            for n in 0..1_000_000u64 {
                match std::fs::File::create(format!("{}/f{n}", cfg.dir)) {
                    Ok(_) => written += 1,
                    Err(e) => {
                        refusal = Some(e);
                        for m in 0..20_000u64 {
                            let _ = std::fs::File::create(format!("{}/g{m}", cfg.dir));
                        }
                        break;
                    }
                }
            }
            if let Some(e) = refusal {
                return Err(e);
            }
        }
        other => return Err(std::io::Error::other(format!("unknown mode {other}"))),
    }
    Ok(written)
}

impl Handler for Filler {
    fn handle(ctx: Context) -> Result<impl serde::Serialize, StepError> {
        let cfg: Config = ctx.config_as()?;
        fill(&cfg).map_err(|e| StepError::permanent(format!("filling {}: {e}", cfg.dir)))
    }
}

export_handler!(Filler);
