//! `tasker dev`: everything a developer needs in one process, as `temporal server start-dev`
//! does: the configured store (the embedded file unless a database URL is set), the HTTP API
//! with in-process workers and the plugin directory watched, auth off on loopback, and
//! `/metrics` open. `--examples` first registers every template under `examples/`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use tasker_store::Store;

use super::ServeOptions;
use crate::app::{App, load_template};

/// The templates of an examples directory: `<dir>/*/*.yaml`, sorted.
fn example_templates(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).with_context(|| {
        format!(
            "no {} directory here: run `tasker dev --examples` from the repository root",
            dir.display()
        )
    })?;
    let mut files = Vec::new();
    for e in entries {
        let sub = e?.path();
        if !sub.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&sub)? {
            let f = f?.path();
            // `.yaml` only: the observability example's Prometheus rules are `.yml`.
            if f.extension().is_some_and(|x| x == "yaml") {
                files.push(f);
            }
        }
    }
    files.sort();
    Ok(files)
}

impl App {
    /// `tasker dev`.
    pub async fn dev(
        &self,
        listen: SocketAddr,
        workers: usize,
        examples: bool,
    ) -> Result<ExitCode> {
        if !listen.ip().is_loopback() {
            bail!("tasker dev runs without auth: it listens on loopback only, not {listen}");
        }
        // Every example is checked before anything is written: a bad one writes nothing.
        let files = if examples {
            example_templates(Path::new("examples"))?
        } else {
            Vec::new()
        };
        let templates = files
            .iter()
            .map(|f| load_template(f))
            .collect::<Result<Vec<_>>>()?;
        // The embedded store is created and migrated here if need be: `tasker serve` only
        // opens one.
        let store = self.store_creating_embedded(2).await?;
        for (t, f) in templates.iter().zip(&files) {
            let reg = store.register_template(t).await?;
            eprintln!(
                "{} {} ({})",
                if reg.created {
                    "registered"
                } else {
                    "already registered"
                },
                reg.key,
                f.display()
            );
        }
        drop(store);
        self.serve(ServeOptions {
            listen,
            workers,
            no_auth: true,
            insecure_no_auth: false,
            public_metrics: true,
            max_body_bytes: 1 << 20,
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repository_examples_are_found_in_order() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
        let files = example_templates(&root).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert!(names.contains(&"order.yaml".to_owned()), "{names:?}");
        let mut sorted = files.clone();
        sorted.sort();
        assert_eq!(files, sorted);
    }

    #[test]
    fn a_missing_examples_directory_says_where_to_run_from() {
        let e = example_templates(Path::new("/nonexistent/examples")).unwrap_err();
        assert!(e.to_string().contains("from the repository root"), "{e}");
    }
}
