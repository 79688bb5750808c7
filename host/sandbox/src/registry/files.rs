//! Reading the plugin directory: which files changed since the last scan, their hash,
//! name, version and world. Nothing here compiles.

use std::collections::{HashMap, HashSet};
use std::fs::Metadata;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use serde::Deserialize;
use wasmparser::{Chunk, ComponentExternalKind, Encoding, Parser, Payload};

use super::ids::{PluginHash, World};
use crate::error::SandboxError;

/// Larger files are refused without being read: a plugin is a few MB (Python's is 19 MB).
pub(super) const MAX_PLUGIN_BYTES: u64 = 256 << 20;
const MAX_SIDECAR_BYTES: u64 = 64 << 10;

/// What says a file is unchanged: same size, modification time and inode (a deploy by
/// rename gives a new inode even when size and mtime match).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stamp {
    len: u64,
    mtime: Option<SystemTime>,
    ino: u64,
}

impl Stamp {
    fn of(m: &Metadata) -> Self {
        #[cfg(unix)]
        let ino = std::os::unix::fs::MetadataExt::ino(m);
        #[cfg(not(unix))]
        let ino = 0;
        Self {
            len: m.len(),
            mtime: m.modified().ok(),
            ino,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Meta {
    pub name: String,
    pub version: String,
}

/// What a file's bytes say, learnt without compiling.
#[derive(Debug, Clone, Copy)]
pub(super) struct Header {
    pub hash: PluginHash,
    pub world: World,
    pub size: u64,
}

/// The memo: per path, the stamp its bytes were read at and what they gave.
pub(super) struct Seen {
    stamp: Stamp,
    sidecar: Option<Stamp>,
    header: Result<Header, SandboxError>,
}

pub(super) type Memo = HashMap<PathBuf, Seen>;

pub(super) enum Content {
    Known(Result<Header, SandboxError>),
    /// Removed or written to while it was read: the change event brings another scan.
    Changing,
}

pub(super) struct Observed {
    pub path: PathBuf,
    pub meta: Result<Meta, SandboxError>,
    pub content: Content,
    /// The file or its sidecar was (re)read by this scan rather than remembered.
    pub fresh: bool,
}

/// Blocking. Lists `*.wasm` files in path order; reads and hashes only those whose stamp
/// differs from the memo's, and forgets removed paths.
pub(super) fn observe(
    dir: &Path,
    memo: &mut Memo,
    hashed: &AtomicU64,
) -> Result<Vec<Observed>, SandboxError> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        SandboxError::load(format!(
            "cannot read plugin directory {}: {e}",
            dir.display()
        ))
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
        .collect();
    paths.sort();
    let mut out = Vec::with_capacity(paths.len());
    let mut present = HashSet::with_capacity(paths.len());
    for path in paths {
        // Follows symlinks; a file removed since the listing is simply gone.
        let Ok(m) = std::fs::metadata(&path) else {
            continue;
        };
        if !m.is_file() {
            continue;
        }
        present.insert(path.clone());
        let stamp = Stamp::of(&m);
        let (meta, sidecar) = read_meta(&path);
        let (content, fresh) = match memo.get_mut(&path) {
            Some(seen) if seen.stamp == stamp => {
                let fresh = seen.sidecar != sidecar;
                seen.sidecar = sidecar;
                (Content::Known(seen.header.clone()), fresh)
            }
            _ => {
                let content = read_header(&path, stamp, hashed);
                match &content {
                    Content::Known(header) => {
                        memo.insert(
                            path.clone(),
                            Seen {
                                stamp,
                                sidecar,
                                header: header.clone(),
                            },
                        );
                    }
                    Content::Changing => {
                        memo.remove(&path);
                    }
                }
                (content, true)
            }
        };
        out.push(Observed {
            path,
            meta,
            content,
            fresh,
        });
    }
    memo.retain(|p, _| present.contains(p));
    Ok(out)
}

fn read_header(path: &Path, stamp: Stamp, hashed: &AtomicU64) -> Content {
    let at = |msg: String| {
        Content::Known(Err(SandboxError::load(format!(
            "{}: {msg}",
            path.display()
        ))))
    };
    if stamp.len > MAX_PLUGIN_BYTES {
        return at(format!(
            "{} bytes is over the {MAX_PLUGIN_BYTES}-byte limit for a plugin",
            stamp.len
        ));
    }
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Content::Changing,
        Err(e) => return at(format!("cannot read: {e}")),
    };
    hashed.fetch_add(1, Ordering::Relaxed);
    let after = std::fs::metadata(path).map(|m| Stamp::of(&m));
    if bytes.len() as u64 != stamp.len || after.ok() != Some(stamp) {
        return Content::Changing;
    }
    let hash = PluginHash::of(&bytes);
    Content::Known(
        world_of(&bytes)
            .map(|world| Header {
                hash,
                world,
                size: stamp.len,
            })
            .map_err(|e| match e {
                SandboxError::Load { message } => {
                    SandboxError::load(format!("{}: {message}", path.display()))
                }
                SandboxError::Incompatible { message } => SandboxError::Incompatible {
                    message: format!("{}: {message}", path.display()),
                },
                other => other,
            }),
    )
}

/// The world a component exports, from its top-level export names. Reads only the outer
/// component's section headers: nested modules and components (nearly all of the bytes)
/// are skipped, and nothing is validated or compiled. The typed check at load confirms it.
pub(super) fn world_of(bytes: &[u8]) -> Result<World, SandboxError> {
    let invalid = |e: &dyn std::fmt::Display| {
        SandboxError::load(format!("not a valid WebAssembly component: {e}"))
    };
    let mut parser = Parser::new(0);
    let mut rest = bytes;
    let (mut handle, mut on_event, mut decide) = (false, false, false);
    loop {
        let (consumed, payload) = match parser.parse(rest, true).map_err(|e| invalid(&e))? {
            Chunk::Parsed { consumed, payload } => (consumed, payload),
            // Not returned at end of input; kept total.
            Chunk::NeedMoreData(_) => return Err(invalid(&"unexpected end of file")),
        };
        let skip = match payload {
            Payload::Version { encoding, .. } if encoding != Encoding::Component => {
                return Err(invalid(
                    &"this is a core module (build a component, e.g. for wasm32-wasip2)",
                ));
            }
            Payload::ModuleSection {
                unchecked_range, ..
            }
            | Payload::ComponentSection {
                unchecked_range, ..
            } => unchecked_range.len(),
            Payload::ComponentExportSection(reader) => {
                for export in reader {
                    let export = export.map_err(|e| invalid(&e))?;
                    if export.kind == ComponentExternalKind::Func {
                        match export.name.name {
                            "handle" => handle = true,
                            "on-event" => on_event = true,
                            "decide" => decide = true,
                            _ => {}
                        }
                    }
                }
                0
            }
            Payload::End(_) => break,
            _ => 0,
        };
        rest = rest
            .get(consumed + skip..)
            .ok_or_else(|| invalid(&"a nested module runs past the end of the file"))?;
    }
    // Same order as the typed check always used: step-handler first.
    match (handle, on_event, decide) {
        (true, _, _) => Ok(World::StepHandler),
        (_, true, _) => Ok(World::EventHook),
        (_, _, true) => Ok(World::RetryPolicy),
        _ => Err(SandboxError::Incompatible {
            message:
                "does not export tasker:plugin/step-handler@0.1.1 (nor event-hook or retry-policy)"
                    .into(),
        }),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Sidecar {
    name: String,
    version: String,
}

/// Name and version (sidecar, else file name), and the sidecar's stamp if there is one.
pub(super) fn read_meta(path: &Path) -> (Result<Meta, SandboxError>, Option<Stamp>) {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let sidecar = path.with_file_name(format!("{stem}.plugin.json"));
    if let Ok(m) = std::fs::metadata(&sidecar) {
        let stamp = Some(Stamp::of(&m));
        let bad = |msg: String| Err(SandboxError::load(format!("{}: {msg}", sidecar.display())));
        if m.len() > MAX_SIDECAR_BYTES {
            return (bad(format!("over {MAX_SIDECAR_BYTES} bytes")), stamp);
        }
        let text = match std::fs::read_to_string(&sidecar) {
            Ok(t) => t,
            Err(e) => return (bad(format!("cannot read: {e}")), stamp),
        };
        let s: Sidecar = match serde_json::from_str(&text) {
            Ok(s) => s,
            Err(e) => return (bad(format!("invalid manifest: {e}")), stamp),
        };
        if s.name.is_empty() || s.version.is_empty() || s.name.contains('@') {
            return (
                bad("name and version must be non-empty and the name must not contain '@'".into()),
                stamp,
            );
        }
        return (
            Ok(Meta {
                name: s.name,
                version: s.version,
            }),
            stamp,
        );
    }
    let meta = match stem.split_once('@') {
        Some((n, v)) if !n.is_empty() && !v.is_empty() => Ok(Meta {
            name: n.into(),
            version: v.into(),
        }),
        Some(_) => Err(SandboxError::load(format!(
            "{}: file name must be <name>@<version>.wasm",
            path.display()
        ))),
        None => Ok(Meta {
            name: stem,
            version: "0.0.0".into(),
        }),
    };
    (meta, None)
}

/// The name a file claims without its sidecar, for reporting a file that has no meta.
pub(super) fn stem_name(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    stem.split('@').next().unwrap_or_default().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_give_name_and_version() {
        let dir = std::env::temp_dir().join(format!("tasker-meta-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let meta = |f: &str| read_meta(&dir.join(f)).0;
        let m = meta("tool@2.1.0.wasm").unwrap();
        assert_eq!((m.name.as_str(), m.version.as_str()), ("tool", "2.1.0"));
        let m = meta("tool.wasm").unwrap();
        assert_eq!((m.name.as_str(), m.version.as_str()), ("tool", "0.0.0"));
        assert_eq!(meta("tool@.wasm").unwrap_err().kind(), "load");
        std::fs::write(
            dir.join("x.plugin.json"),
            r#"{"name": "real", "version": "3.0.0"}"#,
        )
        .unwrap();
        let m = meta("x.wasm").unwrap();
        assert_eq!((m.name.as_str(), m.version.as_str()), ("real", "3.0.0"));
        std::fs::write(dir.join("y.plugin.json"), r#"{"name": "real"}"#).unwrap();
        let e = meta("y.wasm").unwrap_err();
        assert!(e.to_string().contains("y.plugin.json"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn garbage_and_core_modules_are_not_components() {
        for bytes in [
            &b"plain text pretending"[..],
            b"\0asm this is not a component",
            b"\0asm\x0d\0\x01\0 truncated garbage",
            // An empty core module.
            b"\0asm\x01\0\0\0",
        ] {
            let e = world_of(bytes).unwrap_err();
            assert_eq!(e.kind(), "load", "{e}");
            assert!(
                e.to_string().contains("not a valid WebAssembly component"),
                "{e}"
            );
        }
        // A valid but empty component exports no world.
        let e = world_of(b"\0asm\x0d\0\x01\0").unwrap_err();
        assert_eq!(e.kind(), "incompatible", "{e}");
    }
}
