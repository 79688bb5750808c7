//! Capabilities: deny-by-default grants of directories, environment variables and outbound
//! network, turned into a `WasiCtx` per attempt, plus how denials are detected.
//!
//! Detection, honestly:
//! - **Network**: recorded by the host. Every socket address goes through
//!   `socket_addr_check`; a refused one is written to the attempt's denial list.
//! - **Files**: the guest's libc resolves paths against its preopens before the host sees
//!   them, and the host's own refusals (write to a read-only grant, `..` escapes) come back
//!   to the guest as an errno only. So file denials are classified from the guest's
//!   evidence: the errno text in its error message or stderr ([`guest_evidence`]).
//! - **Environment**: an ungranted variable is simply absent, so the host cannot tell that
//!   the guest looked. The guest SDK's `env_var` reports it as "capability denied: ...",
//!   which is the evidence used here.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use crate::error::SandboxError;

/// What one attempt may reach. The default grants nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Grants {
    /// Host directories preopened in the guest.
    pub dirs: Vec<DirGrant>,
    /// Environment variables passed through from the host process (by name).
    pub env: Vec<String>,
    /// Environment variables with explicit values.
    pub env_values: BTreeMap<String, String>,
    /// Outbound network allow-list: "host:port" or "host:*", host being an IP address or a
    /// name (resolved when the attempt starts). IPv6 literals in brackets: "[::1]:80".
    pub net: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirGrant {
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
    /// "net", "fs" or "env".
    pub capability: String,
    pub detail: String,
    /// "host" or "guest_evidence".
    pub detected_by: String,
}

#[derive(Clone, Default)]
pub(crate) struct DenialLog(Arc<Mutex<Vec<Denial>>>);

impl DenialLog {
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

/// Apply `grants` to a WASI builder. Returns the denial log the socket check writes to.
pub(crate) async fn apply(
    grants: &Grants,
    b: &mut WasiCtxBuilder,
) -> Result<DenialLog, SandboxError> {
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
    let denials = DenialLog::default();
    let log = denials.clone();
    let rules = Arc::new(rules);
    // TCP/UDP stay enabled so every use reaches this check and a refusal is recorded;
    // with no rules the check refuses everything.
    b.allow_tcp(true)
        .allow_udp(true)
        .allow_ip_name_lookup(names);
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
            log.push(Denial {
                capability: "net".into(),
                detail: format!("{use_:?} {addr} is not in the network allow-list"),
                detected_by: "host".into(),
            });
        }
        Box::pin(async move { allowed })
    });
    Ok(denials)
}

/// Error texts that mean "the sandbox refused", as the guest reports them: wasi-libc's
/// `strerror` for ENOTCAPABLE, EPERM, EACCES and EROFS, the WASI error-code names, and
/// the guest SDK's own wording.
const EVIDENCE: &[(&str, &str)] = &[
    ("capability denied", "guest reported a capability denial"),
    (
        "Capabilities insufficient",
        "path outside the granted directories (ENOTCAPABLE)",
    ),
    (
        "Operation not permitted",
        "operation not permitted by the grant (EPERM)",
    ),
    (
        "Permission denied",
        "permission denied by the grant (EACCES)",
    ),
    (
        "Read-only file system",
        "write to a read-only grant (EROFS)",
    ),
    ("NotCapable", "path outside the granted directories"),
    ("not-permitted", "operation not permitted by the grant"),
    ("access-denied", "access denied by the grant"),
    (
        "environment variable not found",
        "environment variable not granted",
    ),
];

/// Classify a failed attempt's guest output as a capability denial, if it shows one.
///
/// An absolute path outside every preopen fails inside the guest's libc with ENOENT, the
/// same as a missing file; so "No such file or directory" counts as a denial only when
/// the guest's message names an absolute path outside all of the attempt's grants.
pub(crate) fn guest_evidence(texts: &[&str], grants: &Grants) -> Option<Denial> {
    for text in texts {
        if text.contains("No such file or directory")
            && let Some(path) = ungranted_path(text, grants)
        {
            return Some(Denial {
                capability: "fs".into(),
                detail: format!("path {path} is outside the granted directories"),
                detected_by: "guest_evidence".into(),
            });
        }
        for (needle, what) in EVIDENCE {
            if text.contains(needle) {
                let capability =
                    if needle.contains("environment") || text.contains("environment variable") {
                        "env"
                    } else if text.contains("connect") || text.contains("network") {
                        "net"
                    } else {
                        "fs"
                    };
                return Some(Denial {
                    capability: capability.into(),
                    detail: (*what).to_string(),
                    detected_by: "guest_evidence".into(),
                });
            }
        }
    }
    None
}

/// The first path in `text` that no directory grant covers: an absolute path outside every
/// grant, or a relative path climbing out with `../` (the guest has no working directory).
fn ungranted_path(text: &str, grants: &Grants) -> Option<String> {
    text.split(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | ',' | ';' | '(' | ')'))
        .map(|w| w.trim_end_matches([':', '.']))
        .filter(|w| (w.starts_with('/') && w.len() > 1) || w.starts_with("../"))
        .find(|w| {
            !grants.dirs.iter().any(|d| {
                let g = d.guest.trim_end_matches('/');
                *w == g || w.strip_prefix(g).is_some_and(|rest| rest.starts_with('/'))
            })
        })
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants() -> Grants {
        Grants {
            dirs: vec![DirGrant {
                host: "/tmp".into(),
                guest: "/input".into(),
                writable: false,
            }],
            ..Grants::default()
        }
    }

    #[test]
    fn errno_texts_are_evidence() {
        for text in [
            "reading /input/../x: Capabilities insufficient (os error 76)",
            "write /input/a: Operation not permitted (os error 63)",
            "Read-only file system (os error 69)",
            "capability denied: environment variable `X` is not granted to this step",
        ] {
            let d = guest_evidence(&[text], &grants()).unwrap_or_else(|| panic!("{text}"));
            assert_eq!(d.detected_by, "guest_evidence");
        }
        let d =
            guest_evidence(&["capability denied: environment variable `X`"], &grants()).unwrap();
        assert_eq!(d.capability, "env");
    }

    #[test]
    fn enoent_counts_only_outside_the_grants() {
        let outside = "reading /etc/passwd: No such file or directory (os error 44)";
        assert_eq!(
            guest_evidence(&[outside], &grants()).unwrap().capability,
            "fs"
        );
        assert!(guest_evidence(&["reading ../x: No such file or directory"], &grants()).is_some());
        let inside = "reading /input/missing.txt: No such file or directory (os error 44)";
        assert_eq!(guest_evidence(&[inside], &grants()), None);
        assert_eq!(guest_evidence(&["upstream said 503"], &grants()), None);
    }

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
