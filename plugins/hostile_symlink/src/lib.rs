//! Attack: plant a symlink inside a writable grant that points out of it, then read
//! through it.
use serde::Deserialize;
use std::ffi::{CString, c_char, c_int};
use tasker_guest_sdk::{Context, Handler, StepError, export_handler};

#[derive(Deserialize)]
struct Config {
    /// What the link points to, e.g. "../secret.txt".
    target: String,
    /// Where the link goes, e.g. "/out/evil".
    link: String,
}

unsafe extern "C" {
    // wasi-libc's symlink(2); Rust's std has no stable one for WASI.
    fn symlink(target: *const c_char, linkpath: *const c_char) -> c_int;
}

struct Plant;

impl Handler for Plant {
    fn handle(ctx: Context) -> Result<impl serde::Serialize, StepError> {
        let cfg: Config = ctx.config_as()?;
        let target =
            CString::new(cfg.target.clone()).map_err(|e| StepError::permanent(e.to_string()))?;
        let link =
            CString::new(cfg.link.clone()).map_err(|e| StepError::permanent(e.to_string()))?;
        // SAFETY: both are valid NUL-terminated strings for the duration of the call.
        if unsafe { symlink(target.as_ptr(), link.as_ptr()) } != 0 {
            let e = std::io::Error::last_os_error();
            return Err(StepError::permanent(format!(
                "symlink {} -> {}: {e}",
                cfg.link, cfg.target
            )));
        }
        std::fs::read_to_string(&cfg.link)
            .map_err(|e| StepError::permanent(format!("reading {}: {e}", cfg.link)))
    }
}

export_handler!(Plant);
