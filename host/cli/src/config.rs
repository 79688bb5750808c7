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
    pub data_dir: Option<PathBuf>,
    pub plugin_dir: Option<PathBuf>,
    pub cache_dir: Option<PathBuf>,
    /// What relative host paths of directory grants are resolved against, by this process's
    /// workers (and checked against at register and submit); default: the working directory.
    pub grants_base_dir: Option<PathBuf>,
    #[serde(default)]
    pub worker: WorkerFile,
    /// `[plugins]`: the precompiled cache's bound.
    #[serde(default)]
    pub plugins: PluginsFile,
    /// `[limits]`: the host's bounds for every attempt where a template sets none (fuel,
    /// memory, result size and depth, messages, logs, events, sockets, descriptors, disk).
    #[serde(default)]
    pub limits: tasker_sandbox::ResolvedLimits,
    /// `[http]`: guests' outbound HTTPS trust (`extra_ca_file`, `system_roots`).
    #[serde(default)]
    pub http: tasker_sandbox::HttpConfig,
    /// `[retention]`: how long finished tasks are kept, and how often workers prune.
    #[serde(default)]
    pub retention: RetentionFile,
}

/// `[retention]`, spans like `7d`, `12h`, `30m` (docs/store.md, "Retention").
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionFile {
    /// Complete tasks [default: 7d].
    pub complete: Option<tasker_core::retention::Span>,
    /// Cancelled tasks [default: 7d].
    pub cancelled: Option<tasker_core::retention::Span>,
    /// Tasks in error [default: 30d].
    pub error: Option<tasker_core::retention::Span>,
    /// Delivered hook outbox rows, whatever their task [default: 1h].
    pub delivered: Option<tasker_core::retention::Span>,
    /// How often a worker or server runs the pruner; `0s` turns it off [default: 10m].
    pub interval: Option<tasker_core::retention::Span>,
}

/// Retention after every source was applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionSettings {
    pub spans: tasker_core::retention::Retention,
    pub delivered: tasker_core::retention::Span,
    /// `None`: workers and servers do not prune.
    pub interval: Option<std::time::Duration>,
}

impl From<RetentionFile> for RetentionSettings {
    fn from(f: RetentionFile) -> Self {
        use tasker_core::retention::{Retention, Span};
        let d = Retention::defaults();
        RetentionSettings {
            spans: Retention {
                complete: f.complete.or(d.complete),
                cancelled: f.cancelled.or(d.cancelled),
                error: f.error.or(d.error),
            },
            delivered: f.delivered.unwrap_or(Span::from_secs(3_600)),
            interval: Some(f.interval.unwrap_or(Span::from_secs(600)).duration())
                .filter(|d| !d.is_zero()),
        }
    }
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerFile {
    pub concurrency: Option<usize>,
    pub claim_batch: Option<usize>,
    pub lease_secs: Option<u64>,
    /// On SIGINT/SIGTERM, how long running steps may take before their leases are released
    /// (`30s`, `2m`, `0s`: release at once).
    #[serde(default, deserialize_with = "grace")]
    pub shutdown_grace: Option<std::time::Duration>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginsFile {
    /// Bound on the precompiled cache (`512MiB`, `2GB`, or bytes): least recently used
    /// files no process holds are evicted.
    #[serde(default, deserialize_with = "size")]
    pub cache_max_size: Option<u64>,
}

/// A duration such as `30s`, `1500ms`, `2m` or `1h`.
pub fn parse_grace(s: &str) -> Result<std::time::Duration> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| anyhow::anyhow!("'{s}' is not a duration such as 30s, 1500ms, 2m or 1h"))?;
    let ms = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1_000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => None,
    };
    ms.map(std::time::Duration::from_millis)
        .ok_or_else(|| anyhow::anyhow!("'{s}' is not a duration such as 30s, 1500ms, 2m or 1h"))
}

fn grace<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<std::time::Duration>, D::Error> {
    let s = String::deserialize(d)?;
    parse_grace(&s).map(Some).map_err(serde::de::Error::custom)
}

fn size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }
    match Size::deserialize(d)? {
        Size::Bytes(n) => Ok(Some(n)),
        Size::Text(t) => tasker_sandbox::parse_size(&t)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

/// Where things are, after every source was applied.
#[derive(Debug, Clone)]
pub struct Settings {
    pub database_url: Option<String>,
    pub data_dir: PathBuf,
    pub plugin_dir: PathBuf,
    pub cache_dir: PathBuf,
    /// The precompiled cache's bound in bytes (`None`: unbounded).
    pub cache_max_bytes: Option<u64>,
    /// The base of relative directory grants (`None`: the working directory).
    pub grants_base: Option<PathBuf>,
    pub worker: WorkerFile,
    pub limits: tasker_sandbox::ResolvedLimits,
    pub http: tasker_sandbox::HttpConfig,
    pub retention: RetentionSettings,
}

/// The default plugin directory: where `scripts/build-plugins.sh` stages components.
pub const DEFAULT_PLUGIN_DIR: &str = "plugins/dist";
pub const DEFAULT_CACHE_DIR: &str = ".tasker/cache";
/// The project data directory: the embedded store's file lives here.
pub const DEFAULT_DATA_DIR: &str = ".tasker";
/// The embedded store's file name inside the data directory.
pub const SQLITE_FILE: &str = "tasker.db";

/// Which store the settings select.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// A PostgreSQL URL (`postgres://` or `postgresql://`).
    Postgres(String),
    /// A SQLite file; `defaulted` when no URL was given and the data directory's file is used.
    Sqlite { path: PathBuf, defaulted: bool },
}

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
        data_dir: Option<PathBuf>,
        plugin_dir: Option<PathBuf>,
        cache_dir: Option<PathBuf>,
    ) -> Settings {
        Settings {
            database_url: database_url.or(file.database_url).filter(|u| !u.is_empty()),
            data_dir: data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| DEFAULT_DATA_DIR.into()),
            plugin_dir: plugin_dir
                .or(file.plugin_dir)
                .unwrap_or_else(|| DEFAULT_PLUGIN_DIR.into()),
            cache_dir: cache_dir
                .or(file.cache_dir)
                .unwrap_or_else(|| DEFAULT_CACHE_DIR.into()),
            cache_max_bytes: file.plugins.cache_max_size,
            grants_base: file.grants_base_dir,
            worker: file.worker,
            limits: file.limits,
            http: file.http,
            retention: file.retention.into(),
        }
    }

    /// The store to use: the database URL's, or the embedded SQLite file in the data
    /// directory when there is no URL. An unknown URL scheme is refused by name.
    pub fn store_location(&self) -> Result<StoreLocation> {
        let Some(url) = self.database_url.as_deref() else {
            return Ok(StoreLocation::Sqlite {
                path: self.data_dir.join(SQLITE_FILE),
                defaulted: true,
            });
        };
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(StoreLocation::Postgres(url.to_owned()));
        }
        if let Some(rest) = url.strip_prefix("sqlite:") {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            let path = path.split('?').next().unwrap_or_default();
            if path.is_empty() {
                bail!("database URL {url} names no file: use sqlite:path/to/tasker.db");
            }
            return Ok(StoreLocation::Sqlite {
                path: PathBuf::from(path),
                defaulted: false,
            });
        }
        bail!(
            "database URL {url} is not supported: use postgres://user@host:port/db for PostgreSQL, \
             sqlite:path/to/file.db for an embedded store, or no URL for {}/{SQLITE_FILE}",
            self.data_dir.display()
        )
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
        let s = Settings::resolve(
            file.clone(),
            Some("postgres://flag".into()),
            None,
            None,
            None,
        );
        assert_eq!(s.database_url.as_deref(), Some("postgres://flag"));
        assert_eq!(s.plugin_dir, PathBuf::from("/file/plugins"));
        assert_eq!(s.cache_dir, PathBuf::from(DEFAULT_CACHE_DIR));
        assert_eq!(s.worker.concurrency, Some(8));
        let s = Settings::resolve(FileConfig::default(), None, None, None, None);
        assert_eq!(s.plugin_dir, PathBuf::from(DEFAULT_PLUGIN_DIR));
    }

    #[test]
    fn limits_come_from_the_file_and_typos_are_refused() {
        let file: FileConfig =
            toml::from_str("[limits]\nmax_sockets = 4\ndisk_write_bytes = 1024\n").unwrap();
        let s = Settings::resolve(file, None, None, None, None);
        assert_eq!(s.limits.max_sockets, 4);
        assert_eq!(s.limits.disk_write_bytes, 1024);
        // Unset bounds keep the built-in defaults.
        let d = tasker_sandbox::ResolvedLimits::default();
        assert_eq!(s.limits.output_depth, d.output_depth);
        let e = toml::from_str::<FileConfig>("[limits]\nmax_socket = 4\n").unwrap_err();
        assert!(e.to_string().contains("max_socket"), "{e}");
    }

    #[test]
    fn no_url_means_the_embedded_store_in_the_data_dir() {
        let s = Settings::resolve(FileConfig::default(), None, None, None, None);
        assert_eq!(
            s.store_location().unwrap(),
            StoreLocation::Sqlite {
                path: PathBuf::from(".tasker/tasker.db"),
                defaulted: true
            }
        );
        let s = Settings::resolve(
            FileConfig::default(),
            Some(String::new()),
            Some("/var/lib/tasker".into()),
            None,
            None,
        );
        assert_eq!(
            s.store_location().unwrap(),
            StoreLocation::Sqlite {
                path: PathBuf::from("/var/lib/tasker/tasker.db"),
                defaulted: true
            }
        );
    }

    #[test]
    fn urls_pick_the_backend_and_unknown_schemes_are_named() {
        let at = |url: &str| {
            Settings::resolve(FileConfig::default(), Some(url.into()), None, None, None)
                .store_location()
        };
        assert_eq!(
            at("postgresql://u@h/db").unwrap(),
            StoreLocation::Postgres("postgresql://u@h/db".into())
        );
        assert_eq!(
            at("sqlite:data/t.db").unwrap(),
            StoreLocation::Sqlite {
                path: PathBuf::from("data/t.db"),
                defaulted: false
            }
        );
        assert_eq!(
            at("sqlite:///abs/t.db?mode=rwc").unwrap(),
            StoreLocation::Sqlite {
                path: PathBuf::from("/abs/t.db"),
                defaulted: false
            }
        );
        let err = at("mysql://h/db").unwrap_err().to_string();
        assert!(
            err.contains("mysql://h/db is not supported") && err.contains("postgres://"),
            "{err}"
        );
        let err = at("sqlite:").unwrap_err().to_string();
        assert!(err.contains("names no file"), "{err}");
    }

    #[test]
    fn cache_bound_and_shutdown_grace_come_from_the_file() {
        let file: FileConfig = toml::from_str(
            "[plugins]\ncache_max_size = \"512MiB\"\n[worker]\nshutdown_grace = \"1500ms\"\n",
        )
        .unwrap();
        let s = Settings::resolve(file, None, None, None, None);
        assert_eq!(s.cache_max_bytes, Some(512 << 20));
        assert_eq!(
            s.worker.shutdown_grace,
            Some(std::time::Duration::from_millis(1500))
        );
        let file: FileConfig = toml::from_str("[plugins]\ncache_max_size = 1000\n").unwrap();
        assert_eq!(file.plugins.cache_max_size, Some(1000));
        let e = toml::from_str::<FileConfig>("[plugins]\ncache_max_size = \"lots\"\n").unwrap_err();
        assert!(e.to_string().contains("'lots' is not a size"), "{e}");
        let e = toml::from_str::<FileConfig>("[worker]\nshutdown_grace = \"soon\"\n").unwrap_err();
        assert!(e.to_string().contains("'soon' is not a duration"), "{e}");
        assert_eq!(parse_grace("0s").unwrap(), std::time::Duration::ZERO);
    }

    #[test]
    fn retention_comes_from_the_file_and_bad_spans_name_their_field() {
        use tasker_core::retention::Span;
        let s = Settings::resolve(FileConfig::default(), None, None, None, None);
        assert_eq!(
            s.retention.spans,
            tasker_core::retention::Retention::defaults()
        );
        assert_eq!(
            s.retention.interval,
            Some(std::time::Duration::from_secs(600))
        );
        let file: FileConfig = toml::from_str(
            "[retention]\nerror = \"90d\"\ninterval = \"0s\"\ndelivered = \"30m\"\n",
        )
        .unwrap();
        let s = Settings::resolve(file, None, None, None, None);
        assert_eq!(s.retention.spans.error, Some(Span::from_secs(90 * 86_400)));
        assert_eq!(
            s.retention.spans.complete,
            Some(Span::from_secs(7 * 86_400))
        );
        assert_eq!(s.retention.delivered, Span::from_secs(1_800));
        assert_eq!(s.retention.interval, None);
        let e = toml::from_str::<FileConfig>("[retention]\ncomplete = \"7x\"\n").unwrap_err();
        let e = e.to_string();
        assert!(
            e.contains("complete") && e.contains("'7x' is not a span"),
            "{e}"
        );
        let e = toml::from_str::<FileConfig>("[retention]\ncompleted = \"7d\"\n").unwrap_err();
        assert!(e.to_string().contains("completed"), "{e}");
    }

    #[test]
    fn the_grants_base_comes_from_the_file_or_is_the_working_directory() {
        let s = Settings::resolve(FileConfig::default(), None, None, None, None);
        assert_eq!(s.grants_base, None);
        let file: FileConfig = toml::from_str("grants_base_dir = \"/srv/tasker\"\n").unwrap();
        let s = Settings::resolve(file, None, None, None, None);
        assert_eq!(s.grants_base, Some(PathBuf::from("/srv/tasker")));
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
            None,
            Some("/nonexistent/tasker-plugins".into()),
            None,
        );
        let err = s.require_plugin_dir().unwrap_err().to_string();
        assert!(err.contains("scripts/build-plugins.sh"), "{err}");
    }
}
