//! Streams over files, as the guest gets them: each holds a descriptor lease (a stream
//! keeps its file open after the descriptor is dropped), and output streams charge the
//! disk quota for every byte before it is written. Stdio and socket streams are not
//! wrapped: only `fs_guard.rs` creates these.

use std::sync::Arc;

use bytes::Bytes;
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, InputStream, OutputStream, Pollable};
use wasmtime_wasi::p2::{StreamError, StreamResult};

use crate::guard::{DiskQuota, Lease};

pub(crate) struct LeasedInput {
    pub inner: DynInputStream,
    pub _lease: Lease,
}

#[wasmtime_wasi::async_trait]
impl Pollable for LeasedInput {
    async fn ready(&mut self) {
        self.inner.ready().await
    }
}

#[wasmtime_wasi::async_trait]
impl InputStream for LeasedInput {
    fn read(&mut self, size: usize) -> StreamResult<Bytes> {
        self.inner.read(size)
    }

    async fn blocking_read(&mut self, size: usize) -> StreamResult<Bytes> {
        self.inner.blocking_read(size).await
    }

    fn skip(&mut self, nelem: usize) -> StreamResult<usize> {
        self.inner.skip(nelem)
    }

    async fn blocking_skip(&mut self, nelem: usize) -> StreamResult<usize> {
        self.inner.blocking_skip(nelem).await
    }

    async fn cancel(&mut self) {
        self.inner.cancel().await
    }
}

pub(crate) struct QuotaOutput {
    pub inner: DynOutputStream,
    pub quota: Arc<DiskQuota>,
    pub _lease: Lease,
}

impl QuotaOutput {
    fn charge(&self, n: usize, what: &str) -> StreamResult<()> {
        if self.quota.charge(n as u64, what) {
            Ok(())
        } else {
            // ENOSPC: the guest's libc reports "No space left on device".
            Err(StreamError::LastOperationFailed(
                std::io::Error::from_raw_os_error(28).into(),
            ))
        }
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for QuotaOutput {
    async fn ready(&mut self) {
        self.inner.ready().await
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for QuotaOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.charge(bytes.len(), "output-stream.write")?;
        self.inner.write(bytes)
    }

    async fn blocking_write_and_flush(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.charge(bytes.len(), "output-stream.blocking-write-and-flush")?;
        self.inner.blocking_write_and_flush(bytes).await
    }

    fn write_zeroes(&mut self, nelem: usize) -> StreamResult<()> {
        self.charge(nelem, "output-stream.write-zeroes")?;
        self.inner.write_zeroes(nelem)
    }

    fn flush(&mut self) -> StreamResult<()> {
        self.inner.flush()
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        self.inner.check_write()
    }

    async fn write_ready(&mut self) -> StreamResult<usize> {
        self.inner.write_ready().await
    }

    async fn cancel(&mut self) {
        self.inner.cancel().await
    }
}
