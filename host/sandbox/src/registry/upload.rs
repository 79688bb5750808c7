//! Installing a component sent over the API: checked like a file the scan finds (it
//! compiles, its imports are all provided, it exports a world of this host), then written
//! atomically into the plugin directory, where this process and every watching worker pick
//! it up.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use wasmtime::component::Component;

use super::files::{MAX_PLUGIN_BYTES, world_of};
use super::{Plugin, PluginHash, Registry, compile};
use crate::error::SandboxError;

/// Why an upload was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UploadError {
    /// The name or version cannot name a plugin file.
    #[error("{0}")]
    BadName(String),
    /// The bytes are not a component this host can run.
    #[error(transparent)]
    Invalid(#[from] SandboxError),
    /// `name@version` is already another component: versions are immutable.
    #[error("{name}@{version} is already installed as blake3:{existing}: publish a new version")]
    VersionTaken {
        name: String,
        version: String,
        existing: PluginHash,
    },
    #[error("cannot write into the plugin directory: {0}")]
    Io(String),
}

/// A plugin name as file names allow: ASCII letters, digits, `_` and `-`.
fn check_name(name: &str, version: &str) -> Result<(), UploadError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !ok {
        return Err(UploadError::BadName(format!(
            "plugin name '{name}' must be 1 to 64 ASCII letters, digits, '_' or '-'"
        )));
    }
    semver::Version::parse(version).map_err(|e| {
        UploadError::BadName(format!("plugin version '{version}' is not semver: {e}"))
    })?;
    Ok(())
}

impl Registry {
    /// Checks `bytes` and installs them as `<name>@<version>.wasm`. Returns the plugin and
    /// whether it is new: bytes whose hash is already installed change nothing.
    pub async fn install(
        self: &Arc<Self>,
        name: &str,
        version: &str,
        bytes: Vec<u8>,
    ) -> Result<(Arc<Plugin>, bool), UploadError> {
        check_name(name, version)?;
        if bytes.len() as u64 > MAX_PLUGIN_BYTES {
            return Err(SandboxError::load(format!(
                "{} bytes is over the {MAX_PLUGIN_BYTES}-byte limit for a plugin",
                bytes.len()
            ))
            .into());
        }
        let hash = PluginHash::of(&bytes);
        let installed = |reg: &Registry| reg.plugins().into_iter().find(|p| p.hash == hash);
        if let Some(p) = installed(self) {
            return Ok((p, false));
        }
        if let Some(p) = self
            .plugins()
            .into_iter()
            .find(|p| p.name == name && p.version == version)
        {
            return Err(UploadError::VersionTaken {
                name: name.into(),
                version: version.into(),
                existing: p.hash,
            });
        }
        let world = world_of(&bytes)?;
        // Compile and type-check off the async runtime; keep the precompiled code, so the
        // first attempt does not compile again.
        let (engine, linker) = (self.engine.clone(), self.linker.clone());
        let cache = self
            .cache_dir
            .as_ref()
            .map(|d| d.join(format!("{hash}-{}.cwasm", engine.compat_key())));
        let checked = bytes.clone();
        let max = self.cache_max_bytes;
        tokio::task::spawn_blocking(move || {
            let c = Component::new(engine.engine(), &checked).map_err(|e| {
                SandboxError::load(format!("not a valid WebAssembly component: {e:#}"))
            })?;
            compile::check(&linker, &c, world)?;
            if let Some(path) = cache {
                match compile::write_cache(&c, &path) {
                    Ok(()) => {
                        if let Some(max) = max {
                            compile::bound(&path, max);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "cannot write precompiled cache")
                    }
                }
            }
            Ok::<_, SandboxError>(())
        })
        .await
        .map_err(|e| SandboxError::internal(format!("check task failed: {e}")))??;

        let dir = self.dir.clone();
        let file = format!("{name}@{version}.wasm");
        tokio::task::spawn_blocking(move || write_atomically(&dir, &file, hash, &bytes))
            .await
            .map_err(|e| UploadError::Io(format!("write task failed: {e}")))?
            .map_err(|e| UploadError::Io(e.to_string()))?;
        self.rescan().await?;
        installed(self).map(|p| (p, true)).ok_or_else(|| {
            UploadError::Invalid(SandboxError::load(format!(
                "{name}@{version} was written but the plugin directory scan did not activate it"
            )))
        })
    }
}

/// Writes `bytes` under a hidden temporary name, syncs it, and links it to `file`, which
/// must not exist yet (a concurrent upload of the same version loses cleanly). Readers see
/// the whole file or none.
fn write_atomically(dir: &Path, file: &str, hash: PluginHash, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!(".upload-{hash}-{}.tmp", std::process::id()));
    let target = dir.join(file);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::hard_link(&tmp, &target).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                std::io::Error::new(e.kind(), format!("{} exists", target.display()))
            } else {
                e
            }
        })?;
        std::fs::File::open(dir)?.sync_all()
    })();
    let _ = std::fs::remove_file(&tmp);
    result
}
