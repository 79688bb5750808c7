//! `wasi:filesystem/types` for attempts: wasmtime-wasi's implementation (cap-std keeps
//! every path inside its preopen), plus what the host must see or bound itself:
//! - a `not-permitted` from a call is the host refusing (a path escaping the grant,
//!   through `..`, an absolute path or a symlink, or a write to a read-only grant): it is
//!   recorded as a denial;
//! - opened descriptors and streams over files count against `max_descriptors`;
//! - every byte written (and each new entry) is charged to the disk quota first;
//! - a symlink may only point below its own directory (relative, no `..`), so no link
//!   created in a grant can lead out of it.

use wasmtime::component::{HasData, Resource};
use wasmtime_wasi::filesystem::{Descriptor, WasiFilesystemCtxView};
use wasmtime_wasi::p2::bindings::filesystem::types::{
    self, ErrorCode, HostDescriptor, HostDirectoryEntryStream,
};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, FsError, FsResult};

use crate::attempt::AttemptState;
use crate::fs_streams::{LeasedInput, QuotaOutput};
use crate::guard::Guard;
use crate::limits::ENTRY_COST;

pub(crate) struct GuardedFs<'a> {
    view: WasiFilesystemCtxView<'a>,
    guard: &'a mut Guard,
}

pub(crate) struct FsData;

impl HasData for FsData {
    type Data<'a> = GuardedFs<'a>;
}

pub(crate) fn view(s: &mut AttemptState) -> GuardedFs<'_> {
    let (wasi, table, guard) = s.split();
    GuardedFs {
        view: WasiFilesystemCtxView {
            ctx: wasi.filesystem(),
            table,
        },
        guard,
    }
}

fn borrow(fd: &Resource<Descriptor>) -> Resource<Descriptor> {
    Resource::new_borrow(fd.rep())
}

/// A guest path for a denial's text: bounded, control characters escaped.
fn shown(path: &str) -> String {
    let head: String = path.chars().take(200).collect();
    format!("{head:?}")
}

/// A link target that stays below the link's directory whatever that directory is.
fn stays_below(target: &str) -> bool {
    !target.is_empty()
        && !target.starts_with('/')
        && target.split('/').all(|c| c != ".." && !c.contains('\\'))
}

impl GuardedFs<'_> {
    /// Record a `not-permitted` as the host's refusal of `what`.
    fn seen<T>(&self, r: FsResult<T>, what: impl FnOnce() -> String) -> FsResult<T> {
        if let Err(e) = &r
            && e.downcast_ref() == Some(&ErrorCode::NotPermitted)
        {
            self.guard.denials.record(
                "fs",
                format!(
                    "{}: refused by the host (outside the grant, or a read-only grant)",
                    what()
                ),
            );
        }
        r
    }

    fn charge(&self, n: u64, what: &str) -> FsResult<()> {
        if self.guard.disk.charge(n, what) {
            Ok(())
        } else {
            Err(ErrorCode::InsufficientSpace.into())
        }
    }

    /// Give back the charge of a call that failed.
    fn refund_failed<T>(&self, r: &FsResult<T>, n: u64) {
        if r.is_err() {
            self.guard.disk.refund(n);
        }
    }

    fn reserve(&mut self, what: &str) -> FsResult<()> {
        if self.guard.reserve(self.view.table, false, what) {
            Ok(())
        } else {
            Err(ErrorCode::Quota.into())
        }
    }

    /// The stream a call made on a reservation, out of the table to be wrapped; on any error
    /// the reservation is given back.
    fn take_reserved<T: 'static>(&mut self, r: FsResult<Resource<T>>) -> FsResult<T> {
        let taken = match r {
            Ok(res) => self.view.table.delete(res).map_err(FsError::trap),
            Err(e) => Err(e),
        };
        if taken.is_err() {
            self.guard.unreserve();
        }
        taken
    }

    /// Put a stream made on a reservation back in the table, leased (and quota-checked).
    fn lease_output(
        &mut self,
        r: FsResult<Resource<DynOutputStream>>,
    ) -> FsResult<Resource<DynOutputStream>> {
        let inner = self.take_reserved(r)?;
        let stream: DynOutputStream = Box::new(QuotaOutput {
            inner,
            quota: self.guard.disk.clone(),
            _lease: self.guard.opened_stream(),
        });
        self.view.table.push(stream).map_err(FsError::trap)
    }
}

impl types::Host for GuardedFs<'_> {
    fn convert_error_code(&mut self, err: FsError) -> wasmtime::Result<ErrorCode> {
        types::Host::convert_error_code(&mut self.view, err)
    }

    fn filesystem_error_code(
        &mut self,
        err: Resource<wasmtime::Error>,
    ) -> wasmtime::Result<Option<ErrorCode>> {
        types::Host::filesystem_error_code(&mut self.view, err)
    }
}

impl HostDescriptor for GuardedFs<'_> {
    async fn advise(
        &mut self,
        fd: Resource<Descriptor>,
        offset: types::Filesize,
        len: types::Filesize,
        advice: types::Advice,
    ) -> FsResult<()> {
        HostDescriptor::advise(&mut self.view, fd, offset, len, advice).await
    }

    async fn sync_data(&mut self, fd: Resource<Descriptor>) -> FsResult<()> {
        HostDescriptor::sync_data(&mut self.view, fd).await
    }

    async fn get_flags(&mut self, fd: Resource<Descriptor>) -> FsResult<types::DescriptorFlags> {
        HostDescriptor::get_flags(&mut self.view, fd).await
    }

    async fn get_type(&mut self, fd: Resource<Descriptor>) -> FsResult<types::DescriptorType> {
        HostDescriptor::get_type(&mut self.view, fd).await
    }

    async fn set_size(&mut self, fd: Resource<Descriptor>, size: types::Filesize) -> FsResult<()> {
        // Growth is charged (even a sparse one: the guest could fill it later).
        let current = HostDescriptor::stat(&mut self.view, borrow(&fd))
            .await
            .map(|s| s.size)
            .unwrap_or(0);
        let cost = size.saturating_sub(current);
        self.charge(cost, "set-size")?;
        let r = HostDescriptor::set_size(&mut self.view, fd, size).await;
        self.refund_failed(&r, cost);
        self.seen(r, || "set-size".into())
    }

    async fn set_times(
        &mut self,
        fd: Resource<Descriptor>,
        atim: types::NewTimestamp,
        mtim: types::NewTimestamp,
    ) -> FsResult<()> {
        let r = HostDescriptor::set_times(&mut self.view, fd, atim, mtim).await;
        self.seen(r, || "set-times".into())
    }

    async fn read(
        &mut self,
        fd: Resource<Descriptor>,
        len: types::Filesize,
        offset: types::Filesize,
    ) -> FsResult<(Vec<u8>, bool)> {
        HostDescriptor::read(&mut self.view, fd, len, offset).await
    }

    async fn write(
        &mut self,
        fd: Resource<Descriptor>,
        buf: Vec<u8>,
        offset: types::Filesize,
    ) -> FsResult<types::Filesize> {
        let cost = buf.len() as u64;
        self.charge(cost, "write")?;
        let r = HostDescriptor::write(&mut self.view, fd, buf, offset).await;
        self.refund_failed(&r, cost);
        self.seen(r, || "write".into())
    }

    async fn read_directory(
        &mut self,
        fd: Resource<Descriptor>,
    ) -> FsResult<Resource<types::DirectoryEntryStream>> {
        // Entries are read eagerly: the stream holds no descriptor.
        HostDescriptor::read_directory(&mut self.view, fd).await
    }

    async fn sync(&mut self, fd: Resource<Descriptor>) -> FsResult<()> {
        HostDescriptor::sync(&mut self.view, fd).await
    }

    async fn create_directory_at(
        &mut self,
        fd: Resource<Descriptor>,
        path: String,
    ) -> FsResult<()> {
        let what = || format!("create-directory-at {}", shown(&path));
        let p = path.clone();
        let cost = ENTRY_COST;
        self.charge(cost, "create-directory-at")?;
        let r = HostDescriptor::create_directory_at(&mut self.view, fd, p).await;
        self.refund_failed(&r, cost);
        self.seen(r, what)
    }

    async fn stat(&mut self, fd: Resource<Descriptor>) -> FsResult<types::DescriptorStat> {
        HostDescriptor::stat(&mut self.view, fd).await
    }

    async fn stat_at(
        &mut self,
        fd: Resource<Descriptor>,
        path_flags: types::PathFlags,
        path: String,
    ) -> FsResult<types::DescriptorStat> {
        let what = format!("stat-at {}", shown(&path));
        let r = HostDescriptor::stat_at(&mut self.view, fd, path_flags, path).await;
        self.seen(r, || what)
    }

    async fn set_times_at(
        &mut self,
        fd: Resource<Descriptor>,
        path_flags: types::PathFlags,
        path: String,
        atim: types::NewTimestamp,
        mtim: types::NewTimestamp,
    ) -> FsResult<()> {
        let what = format!("set-times-at {}", shown(&path));
        let r =
            HostDescriptor::set_times_at(&mut self.view, fd, path_flags, path, atim, mtim).await;
        self.seen(r, || what)
    }

    async fn link_at(
        &mut self,
        fd: Resource<Descriptor>,
        old_path_flags: types::PathFlags,
        old_path: String,
        new_descriptor: Resource<Descriptor>,
        new_path: String,
    ) -> FsResult<()> {
        let what = format!("link-at {} -> {}", shown(&new_path), shown(&old_path));
        let cost = ENTRY_COST;
        self.charge(cost, "link-at")?;
        let r = HostDescriptor::link_at(
            &mut self.view,
            fd,
            old_path_flags,
            old_path,
            new_descriptor,
            new_path,
        )
        .await;
        self.refund_failed(&r, cost);
        self.seen(r, || what)
    }

    async fn open_at(
        &mut self,
        fd: Resource<Descriptor>,
        path_flags: types::PathFlags,
        path: String,
        oflags: types::OpenFlags,
        flags: types::DescriptorFlags,
    ) -> FsResult<Resource<Descriptor>> {
        let what = format!("open-at {}", shown(&path));
        // A new entry costs quota: only a create of a path that does not exist yet.
        let creates = oflags.contains(types::OpenFlags::CREATE)
            && HostDescriptor::stat_at(&mut self.view, borrow(&fd), path_flags, path.clone())
                .await
                .is_err_and(|e| e.downcast_ref() == Some(&ErrorCode::NoEntry));
        let cost = if creates { ENTRY_COST } else { 0 };
        self.reserve(&what)?;
        if let Err(e) = self.charge(cost, "open-at") {
            // Refused before anything opened: the reservation is given back, or a guest
            // looping on creates past its quota would drain the host-wide budget.
            self.guard.unreserve();
            return Err(e);
        }
        let r = HostDescriptor::open_at(&mut self.view, fd, path_flags, path, oflags, flags).await;
        self.refund_failed(&r, cost);
        match &r {
            Ok(opened) => self.guard.opened_file(opened.rep()),
            Err(_) => self.guard.unreserve(),
        }
        self.seen(r, || what)
    }

    fn drop(&mut self, fd: Resource<Descriptor>) -> wasmtime::Result<()> {
        self.guard.closed_file(fd.rep());
        HostDescriptor::drop(&mut self.view, fd)
    }

    async fn readlink_at(&mut self, fd: Resource<Descriptor>, path: String) -> FsResult<String> {
        let what = format!("readlink-at {}", shown(&path));
        let r = HostDescriptor::readlink_at(&mut self.view, fd, path).await;
        self.seen(r, || what)
    }

    async fn remove_directory_at(
        &mut self,
        fd: Resource<Descriptor>,
        path: String,
    ) -> FsResult<()> {
        let what = format!("remove-directory-at {}", shown(&path));
        let r = HostDescriptor::remove_directory_at(&mut self.view, fd, path).await;
        self.seen(r, || what)
    }

    async fn rename_at(
        &mut self,
        fd: Resource<Descriptor>,
        old_path: String,
        new_fd: Resource<Descriptor>,
        new_path: String,
    ) -> FsResult<()> {
        let what = format!("rename-at {} -> {}", shown(&old_path), shown(&new_path));
        let r = HostDescriptor::rename_at(&mut self.view, fd, old_path, new_fd, new_path).await;
        self.seen(r, || what)
    }

    async fn symlink_at(
        &mut self,
        fd: Resource<Descriptor>,
        src_path: String,
        dest_path: String,
    ) -> FsResult<()> {
        let what = format!("symlink-at {} -> {}", shown(&dest_path), shown(&src_path));
        if !stays_below(&src_path) {
            self.guard.denials.record(
                "fs",
                format!(
                    "{what}: refused by the host (a link may only point below its own \
                     directory: relative, without `..`)"
                ),
            );
            return Err(ErrorCode::NotPermitted.into());
        }
        let cost = ENTRY_COST;
        self.charge(cost, "symlink-at")?;
        let r = HostDescriptor::symlink_at(&mut self.view, fd, src_path, dest_path).await;
        self.refund_failed(&r, cost);
        self.seen(r, || what)
    }

    async fn unlink_file_at(&mut self, fd: Resource<Descriptor>, path: String) -> FsResult<()> {
        let what = format!("unlink-file-at {}", shown(&path));
        let r = HostDescriptor::unlink_file_at(&mut self.view, fd, path).await;
        self.seen(r, || what)
    }

    fn read_via_stream(
        &mut self,
        fd: Resource<Descriptor>,
        offset: types::Filesize,
    ) -> FsResult<Resource<DynInputStream>> {
        self.reserve("read-via-stream")?;
        let r = HostDescriptor::read_via_stream(&mut self.view, fd, offset);
        let inner = self.take_reserved(r)?;
        let stream: DynInputStream = Box::new(LeasedInput {
            inner,
            _lease: self.guard.opened_stream(),
        });
        self.view.table.push(stream).map_err(FsError::trap)
    }

    fn write_via_stream(
        &mut self,
        fd: Resource<Descriptor>,
        offset: types::Filesize,
    ) -> FsResult<Resource<DynOutputStream>> {
        self.reserve("write-via-stream")?;
        let r = HostDescriptor::write_via_stream(&mut self.view, fd, offset);
        let r = self.lease_output(r);
        self.seen(r, || "write-via-stream".into())
    }

    fn append_via_stream(
        &mut self,
        fd: Resource<Descriptor>,
    ) -> FsResult<Resource<DynOutputStream>> {
        self.reserve("append-via-stream")?;
        let r = HostDescriptor::append_via_stream(&mut self.view, fd);
        let r = self.lease_output(r);
        self.seen(r, || "append-via-stream".into())
    }

    async fn is_same_object(
        &mut self,
        a: Resource<Descriptor>,
        b: Resource<Descriptor>,
    ) -> wasmtime::Result<bool> {
        HostDescriptor::is_same_object(&mut self.view, a, b).await
    }

    async fn metadata_hash(
        &mut self,
        fd: Resource<Descriptor>,
    ) -> FsResult<types::MetadataHashValue> {
        HostDescriptor::metadata_hash(&mut self.view, fd).await
    }

    async fn metadata_hash_at(
        &mut self,
        fd: Resource<Descriptor>,
        path_flags: types::PathFlags,
        path: String,
    ) -> FsResult<types::MetadataHashValue> {
        let what = format!("metadata-hash-at {}", shown(&path));
        let r = HostDescriptor::metadata_hash_at(&mut self.view, fd, path_flags, path).await;
        self.seen(r, || what)
    }
}

impl HostDirectoryEntryStream for GuardedFs<'_> {
    async fn read_directory_entry(
        &mut self,
        stream: Resource<types::DirectoryEntryStream>,
    ) -> FsResult<Option<types::DirectoryEntry>> {
        HostDirectoryEntryStream::read_directory_entry(&mut self.view, stream).await
    }

    fn drop(&mut self, stream: Resource<types::DirectoryEntryStream>) -> wasmtime::Result<()> {
        HostDirectoryEntryStream::drop(&mut self.view, stream)
    }
}

#[cfg(test)]
mod tests {
    use super::stays_below;

    #[test]
    fn links_may_only_point_below_their_directory() {
        for ok in ["a.txt", "sub/a.txt", "./a", "sub/./b"] {
            assert!(stays_below(ok), "{ok}");
        }
        for bad in ["", "/etc", "..", "../x", "sub/../../x", "a/..", "..\\x"] {
            assert!(!stays_below(bad), "{bad}");
        }
    }
}
