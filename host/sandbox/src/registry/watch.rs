//! Hot reload: rescan once per burst of content changes in the plugin directory.

use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};

use super::Registry;
use crate::error::SandboxError;

/// A burst (a copy's writes, a rename, then its sidecar) ends after this long without a
/// content event...
const QUIET: Duration = Duration::from_millis(100);
/// ...or this long after it began, so a file written continuously is still picked up.
const MAX_DELAY: Duration = Duration::from_secs(1);

/// Whether an event can change what the directory holds. Reads, opens, closes after
/// reading and metadata changes cannot (and a scan's own reads cause the first three);
/// only `*.wasm` files, sidecars and the directory itself matter.
pub(super) fn is_content_change(ev: &notify::Event, dir: &Path) -> bool {
    if ev.need_rescan() {
        return true;
    }
    let content = match ev.kind {
        EventKind::Create(_) | EventKind::Remove(_) | EventKind::Any => true,
        EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Modify(_) => true,
        // A writer closed the file: its content is complete.
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) | EventKind::Other => false,
    };
    content
        && (ev.paths.is_empty()
            || ev.paths.iter().any(|p| {
                p == dir
                    || p.extension().is_some_and(|x| x == "wasm")
                    || p.to_string_lossy().ends_with(".plugin.json")
            }))
}

impl Registry {
    /// Watch the directory and rescan on content changes, debounced. Needs a tokio
    /// runtime; the watch lives as long as the registry.
    pub fn watch(self: &Arc<Self>) -> Result<(), SandboxError> {
        use notify::Watcher;
        // One slot: events arriving while a scan is pending or running coalesce into one
        // more scan, and the queue cannot grow.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        let dir = self.dir.clone();
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            // A watcher error may mean lost events: rescan to be sure.
            if res.as_ref().map_or(true, |ev| is_content_change(ev, &dir)) {
                let _ = tx.try_send(());
            }
        })
        .map_err(|e| SandboxError::internal(format!("cannot watch {}: {e}", self.dir.display())))?;
        watcher
            .watch(&self.dir, notify::RecursiveMode::NonRecursive)
            .map_err(|e| {
                SandboxError::internal(format!("cannot watch {}: {e}", self.dir.display()))
            })?;
        *self.watcher.lock().unwrap_or_else(|e| e.into_inner()) = Some(watcher);

        let weak: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            // Ends when the registry (and with it the watcher and `tx`) is dropped.
            while rx.recv().await.is_some() {
                let began = Instant::now();
                loop {
                    match tokio::time::timeout(QUIET, rx.recv()).await {
                        Ok(Some(())) if began.elapsed() < MAX_DELAY => continue,
                        Ok(Some(())) | Err(_) => break,
                        Ok(None) => return,
                    }
                }
                let Some(reg) = weak.upgrade() else { break };
                if let Err(e) = reg.rescan().await {
                    tracing::warn!(error = %e, "plugin rescan failed");
                }
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, DataChange, MetadataKind, RemoveKind, RenameMode};
    use notify::{Event, event::Flag};

    #[test]
    fn only_content_changes_to_plugin_files_count() {
        let dir = Path::new("/plugins");
        let ev = |kind, file: &str| Event::new(kind).add_path(dir.join(file));
        let yes = [
            ev(EventKind::Create(CreateKind::File), "a.wasm"),
            ev(
                EventKind::Modify(ModifyKind::Data(DataChange::Any)),
                "a.wasm",
            ),
            ev(
                EventKind::Modify(ModifyKind::Name(RenameMode::To)),
                "a.wasm",
            ),
            ev(
                EventKind::Modify(ModifyKind::Name(RenameMode::From)),
                "a.wasm",
            ),
            ev(EventKind::Modify(ModifyKind::Any), "a.wasm"),
            ev(EventKind::Remove(RemoveKind::File), "a.wasm"),
            ev(
                EventKind::Access(AccessKind::Close(AccessMode::Write)),
                "a.wasm",
            ),
            ev(EventKind::Create(CreateKind::File), "a.plugin.json"),
            ev(EventKind::Remove(RemoveKind::Folder), ""),
            Event::new(EventKind::Other).set_flag(Flag::Rescan),
        ];
        for e in &yes {
            assert!(is_content_change(e, dir), "{e:?}");
        }
        let no = [
            ev(
                EventKind::Access(AccessKind::Open(AccessMode::Any)),
                "a.wasm",
            ),
            ev(EventKind::Access(AccessKind::Read), "a.wasm"),
            ev(
                EventKind::Access(AccessKind::Close(AccessMode::Read)),
                "a.wasm",
            ),
            ev(EventKind::Access(AccessKind::Any), "a.wasm"),
            ev(
                EventKind::Modify(ModifyKind::Metadata(MetadataKind::Permissions)),
                "a.wasm",
            ),
            ev(
                EventKind::Modify(ModifyKind::Metadata(MetadataKind::Any)),
                "a.wasm",
            ),
            // Not plugin files: a deploy's temporary name, the cache, editors' files.
            ev(EventKind::Create(CreateKind::File), "a.partial"),
            ev(
                EventKind::Modify(ModifyKind::Data(DataChange::Any)),
                "x.cwasm",
            ),
            ev(EventKind::Other, "a.wasm"),
        ];
        for e in &no {
            assert!(!is_content_change(e, dir), "{e:?}");
        }
    }
}
