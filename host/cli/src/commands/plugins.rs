//! `tasker plugins list | inspect | upload | gc`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use tasker_sandbox::PluginRef;

use crate::app::App;
use crate::report;

impl App {
    /// `tasker plugins list`.
    pub async fn plugins_list(&self) -> Result<ExitCode> {
        let sandbox = self.sandbox(false).await?;
        // Plugins compile on first use: compile them all here, so a broken one is named.
        for (path, err) in sandbox.registry().load_all().await {
            eprintln!("warning: plugin {} was not loaded: {err}", path.display());
        }
        report::plugins(&sandbox, &self.settings.cache_dir);
        Ok(ExitCode::SUCCESS)
    }

    /// `tasker plugins inspect`.
    pub async fn plugins_inspect(&self, plugin: &str) -> Result<ExitCode> {
        let r: PluginRef = plugin.parse().map_err(anyhow::Error::msg)?;
        let sandbox = self.sandbox(false).await?;
        let p = sandbox.registry().load(&r).await?;
        report::plugin(&p, &self.settings.cache_dir);
        Ok(ExitCode::SUCCESS)
    }

    /// `tasker plugins gc`: every precompiled file no process holds goes (a running worker's
    /// loaded plugins stay), and leftover temporary files.
    pub fn plugins_gc(&self) -> Result<ExitCode> {
        let dir = &self.settings.cache_dir;
        let r = tasker_sandbox::cache_gc(dir)
            .with_context(|| format!("cannot clean the cache directory {}", dir.display()))?;
        println!("{}", gc_summary(dir, &r));
        Ok(ExitCode::SUCCESS)
    }

    /// `tasker plugins upload`: checked and installed as the server's upload does.
    pub async fn plugins_upload(
        &self,
        name: &str,
        version: &str,
        bytes: Vec<u8>,
    ) -> Result<ExitCode> {
        let sandbox = self.sandbox(false).await?;
        let (p, created) = sandbox.registry().install(name, version, bytes).await?;
        println!(
            "{}",
            uploaded(created, &p.name, &p.version, &p.hash.to_hex())
        );
        Ok(ExitCode::SUCCESS)
    }
}

/// What `plugins gc` says: each file removed, then the totals.
pub fn gc_summary(dir: &Path, r: &tasker_sandbox::CacheReport) -> String {
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1 << 20) as f64);
    let mut out = String::new();
    for e in r.removed.iter().chain(&r.stale_temps) {
        let name = e.path.file_name().unwrap_or_default().to_string_lossy();
        out.push_str(&format!("removed {name} ({})\n", mib(e.bytes)));
    }
    out.push_str(&format!(
        "removed {} precompiled files and {} leftover temporary files ({}) from {}; kept {} in use ({})",
        r.removed.len(),
        r.stale_temps.len(),
        mib(r.removed_bytes()),
        dir.display(),
        r.in_use.len(),
        mib(r.remaining_bytes()),
    ));
    out
}

/// What an upload says: installed, or already there (under the name it has).
pub fn uploaded(created: bool, name: &str, version: &str, hex: &str) -> String {
    let what = if created {
        "installed"
    } else {
        "already installed as"
    };
    format!("{what} {name}@{version} (blake3:{hex})")
}

/// Name, version and bytes of `tasker plugins upload FILE`: the flags, else the file's name
/// (`name@version.wasm`).
pub fn upload_args(
    file: &Path,
    name: Option<String>,
    version: Option<String>,
) -> Result<(String, String, Vec<u8>)> {
    let stem = file
        .file_name()
        .and_then(|f| f.to_str())
        .and_then(|f| f.strip_suffix(".wasm"))
        .and_then(|f| f.split_once('@'));
    let (name, version) = match (name, version, stem) {
        (Some(n), Some(v), _) => (n, v),
        (n, v, Some((sn, sv))) => (
            n.unwrap_or_else(|| sn.into()),
            v.unwrap_or_else(|| sv.into()),
        ),
        _ => bail!(
            "{} is not named name@version.wasm: give --name and --version",
            file.display()
        ),
    };
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    Ok((name, version, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_and_version_come_from_the_flags_or_the_file_name() {
        let dir = std::env::temp_dir().join(format!("upload-args-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let named = dir.join("echo@0.2.0.wasm");
        std::fs::write(&named, b"x").unwrap();
        let (n, v, b) = upload_args(&named, None, None).unwrap();
        assert_eq!(
            (n.as_str(), v.as_str(), b.as_slice()),
            ("echo", "0.2.0", &b"x"[..])
        );
        let (n, v, _) = upload_args(&named, Some("other".into()), None).unwrap();
        assert_eq!((n.as_str(), v.as_str()), ("other", "0.2.0"));
        let plain = dir.join("handler.wasm");
        std::fs::write(&plain, b"x").unwrap();
        let e = upload_args(&plain, None, None).unwrap_err().to_string();
        assert!(e.contains("handler.wasm") && e.contains("--name"), "{e}");
        assert!(upload_args(&plain, Some("h".into()), Some("1.0.0".into())).is_ok());
        let e = upload_args(&dir.join("gone@1.0.0.wasm"), None, None).unwrap_err();
        assert!(format!("{e:#}").contains("cannot read"), "{e:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
