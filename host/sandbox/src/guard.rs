//! The ledger of host resources one attempt's guest holds: descriptors (files and
//! directories it opened, streams over files, sockets), sockets, and bytes written to
//! disk. Every refusal is recorded as a denial. A process-wide budget keeps all attempts
//! together below the host's own descriptor limit, whatever the number of attempts.
//!
//! The linker set-up is here too: wasmtime-wasi's WASI, with the interfaces that create
//! descriptors shadowed by the counting wrappers of `fs_guard.rs` and `net_guard.rs`.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use wasmtime::component::{Linker, Resource, ResourceTable};
use wasmtime_wasi::p2::{TcpSocket, UdpSocket};

use crate::attempt::AttemptState;
use crate::caps::DenialLog;
use crate::fs_guard::{self, FsData};
use crate::limits::ResolvedLimits;
use crate::net_guard::{self, NetData};

/// Link WASI for attempts: everything from wasmtime-wasi, then the guarded interfaces
/// over it (same names, so they replace the originals).
pub(crate) fn add_to_linker(linker: &mut Linker<AttemptState>) -> wasmtime::Result<()> {
    use wasmtime_wasi::p2::bindings::{filesystem, sockets};
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    linker.allow_shadowing(true);
    filesystem::types::add_to_linker::<_, FsData>(linker, fs_guard::view)?;
    sockets::tcp_create_socket::add_to_linker::<_, NetData>(linker, net_guard::view)?;
    sockets::udp_create_socket::add_to_linker::<_, NetData>(linker, net_guard::view)?;
    linker.allow_shadowing(false);
    Ok(())
}

/// Descriptors all guests together may hold: half the process's soft limit, leaving the
/// rest to the host itself.
fn host_budget() -> usize {
    static BUDGET: OnceLock<usize> = OnceLock::new();
    *BUDGET.get_or_init(|| {
        let soft = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|text| {
                let line = text.lines().find(|l| l.starts_with("Max open files"))?;
                line.split_whitespace().nth(3)?.parse::<usize>().ok()
            })
            .unwrap_or(1024);
        (soft / 2).max(64)
    })
}

static HOST_HELD: AtomicUsize = AtomicUsize::new(0);

fn host_acquire() -> bool {
    HOST_HELD
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
            (held < host_budget()).then_some(held + 1)
        })
        .is_ok()
}

fn host_release(n: usize) {
    if n > 0 {
        HOST_HELD.fetch_sub(n, Ordering::AcqRel);
    }
}

/// One descriptor of the host's budget held outside the table (a connection the host
/// makes for a guest's HTTP request); released when dropped.
pub(crate) struct HostLease(());

impl HostLease {
    pub fn acquire() -> Option<Self> {
        host_acquire().then_some(HostLease(()))
    }
}

impl Drop for HostLease {
    fn drop(&mut self) {
        host_release(1);
    }
}

/// One descriptor held by a stream; released when the stream is dropped.
pub(crate) struct Lease {
    streams: Arc<AtomicUsize>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.streams.fetch_sub(1, Ordering::AcqRel);
        host_release(1);
    }
}

/// Bytes the guest may still write into its `rw` grants.
pub(crate) struct DiskQuota {
    limit: u64,
    used: AtomicU64,
    denials: DenialLog,
}

impl DiskQuota {
    /// Take `n` bytes of quota, or record the refusal and take nothing.
    pub fn charge(&self, n: u64, what: &str) -> bool {
        let taken = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|t| *t <= self.limit)
            });
        match taken {
            Ok(_) => true,
            Err(used) => {
                self.denials.record(
                    "fs",
                    format!(
                        "{what}: {n} more bytes would pass the disk_write_bytes quota of {} \
                         ({used} written)",
                        self.limit
                    ),
                );
                false
            }
        }
    }

    /// Give back a charge whose write did not happen.
    pub fn refund(&self, n: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                Some(u.saturating_sub(n))
            });
    }
}

/// Per-attempt resource ledger (store data).
pub(crate) struct Guard {
    pub denials: DenialLog,
    pub net_granted: bool,
    max_sockets: usize,
    max_descriptors: usize,
    /// Descriptors opened by `open-at`, by table index, until their drop.
    files: HashSet<u32>,
    /// Sockets, by table index. Only the create calls make sockets (listening is never
    /// allowed, so nothing is accepted), so a tracked index that no longer holds a
    /// socket was closed: `prune_sockets` forgets it.
    sockets: HashSet<u32>,
    /// Live streams over files (each holds a [`Lease`]).
    streams: Arc<AtomicUsize>,
    pub disk: Arc<DiskQuota>,
}

impl Guard {
    pub fn new(limits: &ResolvedLimits, net_granted: bool, denials: DenialLog) -> Self {
        Self {
            disk: Arc::new(DiskQuota {
                limit: limits.disk_write_bytes,
                used: AtomicU64::new(0),
                denials: denials.clone(),
            }),
            denials,
            net_granted,
            max_sockets: limits.max_sockets as usize,
            max_descriptors: limits.max_descriptors as usize,
            files: HashSet::new(),
            sockets: HashSet::new(),
            streams: Arc::default(),
        }
    }

    fn prune_sockets(&mut self, table: &ResourceTable) {
        let before = self.sockets.len();
        self.sockets.retain(|&rep| {
            table.get(&Resource::<TcpSocket>::new_borrow(rep)).is_ok()
                || table.get(&Resource::<UdpSocket>::new_borrow(rep)).is_ok()
        });
        host_release(before - self.sockets.len());
    }

    fn held(&self) -> usize {
        self.files.len() + self.sockets.len() + self.streams.load(Ordering::Acquire)
    }

    /// Reserve one descriptor (a socket if `socket`) before the host creates it; `false`
    /// (recorded) when a cap is reached. Undo with [`Guard::unreserve`] if the creation
    /// then fails.
    pub fn reserve(&mut self, table: &ResourceTable, socket: bool, what: &str) -> bool {
        self.prune_sockets(table);
        let (capability, refusal) = if socket && self.sockets.len() >= self.max_sockets {
            (
                "net",
                format!(
                    "{what}: the attempt holds {} sockets, the max_sockets cap",
                    self.sockets.len()
                ),
            )
        } else if self.held() >= self.max_descriptors {
            (
                if socket { "net" } else { "fs" },
                format!(
                    "{what}: the attempt holds {} descriptors, the max_descriptors cap",
                    self.held()
                ),
            )
        } else if !host_acquire() {
            (
                if socket { "net" } else { "fs" },
                format!(
                    "{what}: guests hold the host's whole descriptor budget ({})",
                    host_budget()
                ),
            )
        } else {
            return true;
        };
        self.denials.record(capability, refusal);
        false
    }

    pub fn unreserve(&mut self) {
        host_release(1);
    }

    pub fn opened_file(&mut self, rep: u32) {
        self.files.insert(rep);
    }

    pub fn opened_socket(&mut self, rep: u32) {
        self.sockets.insert(rep);
    }

    /// A stream over a file was created on a reservation.
    pub fn opened_stream(&mut self) -> Lease {
        self.streams.fetch_add(1, Ordering::AcqRel);
        Lease {
            streams: self.streams.clone(),
        }
    }

    pub fn closed_file(&mut self, rep: u32) {
        if self.files.remove(&rep) {
            host_release(1);
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        // Streams release their own leases when the table drops them.
        host_release(self.files.len() + self.sockets.len());
    }
}
