//! Settings: built-in defaults, then an optional `tasker.toml`, then the environment, then
//! flags (clap fills flags and environment together).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// The optional config file (`--config`, or `tasker.toml` in the working directory).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub database_url: Option<String>,
    pub plugin_dir: Option<PathBuf>,
    pub cache_dir: Option<PathBuf>,
    #[serde(default)]
    pub worker: WorkerFile,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerFile {
    pub concurrency: Option<usize>,
    pub claim_batch: Option<usize>,
    pub lease_secs: Option<u64>,
}

/// Where things are, after every source was applied.
#[derive(Debug, Clone)]
pub struct Settings {
    pub database_url: Option<String>,
    pub plugin_dir: PathBuf,
    pub cache_dir: PathBuf,
    pub worker: WorkerFile,
}

/// The default plugin directory: where `scripts/build-plugins.sh` stages components.
pub const DEFAULT_PLUGIN_DIR: &str = "plugins/dist";
pub const DEFAULT_CACHE_DIR: &str = ".tasker/cache";

impl FileConfig {
    /// Reads `path`, or `tasker.toml` if it exists when no path is given.
    pub fn load(path: Option<&Path>) -> Result<FileConfig> {
        let (path, required) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from("tasker.toml"), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(FileConfig::default());
            }
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
    }
}

impl Settings {
    pub fn resolve(
        file: FileConfig,
        database_url: Option<String>,
        plugin_dir: Option<PathBuf>,
        cache_dir: Option<PathBuf>,
    ) -> Settings {
        Settings {
            database_url: database_url.or(file.database_url),
            plugin_dir: plugin_dir
                .or(file.plugin_dir)
                .unwrap_or_else(|| DEFAULT_PLUGIN_DIR.into()),
            cache_dir: cache_dir
                .or(file.cache_dir)
                .unwrap_or_else(|| DEFAULT_CACHE_DIR.into()),
            worker: file.worker,
        }
    }

    /// The database URL, or one sentence saying what to do.
    pub fn require_database(&self) -> Result<&str> {
        match self.database_url.as_deref() {
            Some(u) if !u.is_empty() => Ok(u),
            _ => bail!(
                "no database configured: set DATABASE_URL (for example postgres://postgres@127.0.0.1:5432/postgres) or pass --database-url"
            ),
        }
    }

    /// The plugin directory, or one sentence saying what to do.
    pub fn require_plugin_dir(&self) -> Result<&Path> {
        if self.plugin_dir.is_dir() {
            Ok(&self.plugin_dir)
        } else {
            bail!(
                "plugin directory {} does not exist: build the plugins with scripts/build-plugins.sh, or pass --plugin-dir / set TASKER_PLUGIN_DIR",
                self.plugin_dir.display()
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_file_which_wins_over_defaults() {
        let file: FileConfig = toml::from_str(
            "database_url = \"postgres://file\"\nplugin_dir = \"/file/plugins\"\n[worker]\nconcurrency = 8\n",
        )
        .unwrap();
        let s = Settings::resolve(file.clone(), Some("postgres://flag".into()), None, None);
        assert_eq!(s.database_url.as_deref(), Some("postgres://flag"));
        assert_eq!(s.plugin_dir, PathBuf::from("/file/plugins"));
        assert_eq!(s.cache_dir, PathBuf::from(DEFAULT_CACHE_DIR));
        assert_eq!(s.worker.concurrency, Some(8));
        let s = Settings::resolve(FileConfig::default(), None, None, None);
        assert_eq!(s.plugin_dir, PathBuf::from(DEFAULT_PLUGIN_DIR));
        let err = s.require_database().unwrap_err().to_string();
        assert!(
            err.starts_with("no database configured: set DATABASE_URL"),
            "{err}"
        );
    }

    #[test]
    fn unknown_config_keys_are_refused() {
        let err = toml::from_str::<FileConfig>("databse_url = \"x\"\n").unwrap_err();
        assert!(err.to_string().contains("databse_url"), "{err}");
    }

    #[test]
    fn missing_plugin_dir_says_what_to_do() {
        let s = Settings::resolve(
            FileConfig::default(),
            None,
            Some("/nonexistent/tasker-plugins".into()),
            None,
        );
        let err = s.require_plugin_dir().unwrap_err().to_string();
        assert!(err.contains("scripts/build-plugins.sh"), "{err}");
    }
}
