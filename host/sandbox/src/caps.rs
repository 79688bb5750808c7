//! Capabilities: deny-by-default grants of directories, environment variables and outbound
//! network, turned into a `WasiCtx` per attempt, and the log of what the host refused.
//!
//! A denial is only ever what the host itself refused: an address outside the network
//! allow-list (`socket_addr_check`), a socket without a `net` grant, a path escaping a
//! preopen or a write to a read-only grant (seen in the filesystem calls, `fs_guard.rs`),
//! a resource cap or the disk quota (`guard.rs`). What only the guest can see (an absolute
//! path outside every preopen fails inside its libc; an ungranted variable is absent) is
//! not a denial: the attempt fails with the guest's own error.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tasker_core::http_grant::HttpRule;
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use crate::error::SandboxError;

/// What one attempt may reach. The default grants nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AttemptGrants {
    /// Host directories preopened in the guest.
    pub dirs: Vec<HostDir>,
    /// Environment variables passed through from the host process (by name).
    pub env: Vec<String>,
    /// Environment variables with explicit values.
    pub env_values: BTreeMap<String, String>,
    /// Outbound network allow-list: "host:port" or "host:*", host being an IP address or a
    /// name (resolved when the attempt starts). IPv6 literals in brackets: "[::1]:80".
    pub net: Vec<String>,
    /// Outbound HTTP requests the guest may make through `wasi:http` (`http/`).
    pub http: Vec<HttpRule>,
    /// Secrets written into HTTP header values where the guest put `{{secret:NAME}}`:
    /// name to source (`env:VARIABLE`, read on the worker when the attempt starts).
    pub secrets: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostDir {
    /// Directory on the host. Must exist.
    pub host: PathBuf,
    /// Where the guest sees it, e.g. "/input".
    pub guest: String,
    /// Read-write if true, read-only otherwise.
    #[serde(default)]
    pub writable: bool,
}

/// One refused use of a capability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Denial {
    /// "net", "fs" or "http".
    pub capability: String,
    pub detail: String,
    /// Always "host": kept for compatibility with earlier reports.
    pub detected_by: String,
}

#[derive(Clone, Default)]
pub(crate) struct DenialLog(Arc<Mutex<Vec<Denial>>>);

impl DenialLog {
    /// Record a refusal by the host.
    pub fn record(&self, capability: &str, detail: String) {
        self.push(Denial {
            capability: capability.into(),
            detail,
            detected_by: "host".into(),
        });
    }

    fn push(&self, d: Denial) {
        let mut v = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // Bounded: a guest retrying in a loop must not grow this without end.
        if v.len() < 64 {
            v.push(d);
        }
    }

    pub fn snapshot(&self) -> Vec<Denial> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[derive(Debug, Clone)]
struct NetRule {
    ips: Vec<IpAddr>,
    port: Option<u16>,
}

impl NetRule {
    fn allows(&self, addr: SocketAddr) -> bool {
        self.ips.contains(&addr.ip()) && self.port.is_none_or(|p| p == addr.port())
    }
}

async fn parse_net_rule(entry: &str) -> Result<(NetRule, bool), SandboxError> {
    let bad = |why: &str| SandboxError::Config {
        message: format!("network grant {entry:?}: {why}; expected \"host:port\" or \"host:*\""),
    };
    let (host, port) = entry.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    let port = match port {
        "*" => None,
        p => Some(p.parse::<u16>().map_err(|_| bad("port is not a number"))?),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad("empty host"));
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok((
            NetRule {
                ips: vec![ip],
                port,
            },
            false,
        ));
    }
    let ips: Vec<IpAddr> = tokio::net::lookup_host((host, port.unwrap_or(0)))
        .await
        .map_err(|e| bad(&format!("cannot resolve host: {e}")))?
        .map(|a| a.ip())
        .collect();
    Ok((NetRule { ips, port }, true))
}

/// Apply `grants` to a WASI builder; the socket check writes refusals to `denials`.
pub(crate) async fn apply(
    grants: &AttemptGrants,
    b: &mut WasiCtxBuilder,
    denials: &DenialLog,
) -> Result<(), SandboxError> {
    for d in &grants.dirs {
        if !d.guest.starts_with('/') {
            return Err(SandboxError::Config {
                message: format!(
                    "directory grant for {}: guest path {:?} must be absolute",
                    d.host.display(),
                    d.guest
                ),
            });
        }
        let perms = if d.writable {
            FsPerms::ReadWrite
        } else {
            FsPerms::ReadOnly
        };
        b.preopened_dir(&d.host, &d.guest, perms)
            .map_err(|e| SandboxError::Config {
                message: format!("directory grant {} -> {}: {e:#}", d.host.display(), d.guest),
            })?;
    }
    for name in &grants.env {
        // A granted variable missing on the host is absent in the guest too.
        if let Ok(v) = std::env::var(name) {
            b.env(name, v);
        }
    }
    for (k, v) in &grants.env_values {
        b.env(k, v);
    }

    let mut rules = Vec::new();
    let mut names = false;
    for entry in &grants.net {
        let (rule, by_name) = parse_net_rule(entry).await?;
        names |= by_name;
        rules.push(rule);
    }
    let log = denials.clone();
    let rules = Arc::new(rules);
    // Without a grant no socket is created at all (`net_guard.rs` refuses and records it);
    // wasmtime-wasi's own switches say the same as a second line.
    let net = !grants.net.is_empty();
    b.allow_tcp(net).allow_udp(net).allow_ip_name_lookup(names);
    b.socket_addr_check(move |addr, use_| {
        let allowed = match use_ {
            SocketAddrUse::TcpConnect | SocketAddrUse::UdpSend => {
                rules.iter().any(|r| r.allows(addr))
            }
            // The implicit wildcard bind (port 0) that precedes a connect reaches nothing by
            // itself: allow it, so the refusal is recorded at the connect, with the address.
            // Explicit binds and listening are never granted.
            SocketAddrUse::TcpBind | SocketAddrUse::UdpBind => {
                addr.ip().is_unspecified() && addr.port() == 0
            }
            SocketAddrUse::TcpListen | SocketAddrUse::TcpAccept | SocketAddrUse::UdpReceive => {
                false
            }
        };
        if !allowed {
            log.record(
                "net",
                format!("{use_:?} {addr} is not in the network allow-list"),
            );
        }
        Box::pin(async move { allowed })
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn net_rules_parse_and_match() {
        let (r, by_name) = parse_net_rule("127.0.0.1:8080").await.unwrap();
        assert!(!by_name);
        assert!(r.allows("127.0.0.1:8080".parse().unwrap()));
        assert!(!r.allows("127.0.0.1:8081".parse().unwrap()));
        let (r, _) = parse_net_rule("[::1]:*").await.unwrap();
        assert!(r.allows("[::1]:1".parse().unwrap()));
        let (r, by_name) = parse_net_rule("localhost:80").await.unwrap();
        assert!(by_name && r.allows("127.0.0.1:80".parse().unwrap()));
        for bad in ["127.0.0.1", "127.0.0.1:http", ":80"] {
            assert_eq!(
                parse_net_rule(bad).await.unwrap_err().kind(),
                "config",
                "{bad}"
            );
        }
    }
}
