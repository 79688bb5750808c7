//! Attack: open as many sockets as the host allows and hold them all.
use serde::Deserialize;
use std::io::Read;
use tasker_guest_sdk::{Context, Handler, StepError, export_handler};

#[derive(Deserialize)]
struct Config {
    /// TCP address to connect to again and again, e.g. "127.0.0.1:9".
    addr: String,
    /// "tcp" (default) or "udp" (sockets bound, never sent on).
    #[serde(default)]
    proto: Option<String>,
    /// Once refused, hold every socket until the peer closes the first one.
    #[serde(default)]
    hold: bool,
    /// Instead: connect and close this many times, one socket at a time.
    #[serde(default)]
    churn: Option<usize>,
}

struct Flood;

impl Handler for Flood {
    fn handle(ctx: Context) -> Result<impl serde::Serialize, StepError> {
        let cfg: Config = ctx.config_as()?;
        if let Some(n) = cfg.churn {
            for i in 0..n {
                drop(
                    std::net::TcpStream::connect(&cfg.addr)
                        .map_err(|e| StepError::permanent(format!("connect {i} of {n}: {e}")))?,
                );
            }
            return Ok(n);
        }
        let udp = cfg.proto.as_deref() == Some("udp");
        let mut tcp = Vec::new();
        let mut udps = Vec::new();
        // Bounded so a host without caps ends the attack instead of the test machine.
        let refusal = loop {
            if tcp.len() + udps.len() >= 50_000 {
                break "no refusal".to_string();
            }
            if udp {
                match std::net::UdpSocket::bind("0.0.0.0:0") {
                    Ok(s) => udps.push(s),
                    Err(e) => break e.to_string(),
                }
            } else {
                match std::net::TcpStream::connect(&cfg.addr) {
                    Ok(s) => tcp.push(s),
                    Err(e) => break e.to_string(),
                }
            }
        };
        if cfg.hold
            && let Some(first) = tcp.first_mut()
        {
            let mut buf = [0u8; 16];
            // Blocks until the peer closes: the host sees every socket held meanwhile.
            while matches!(first.read(&mut buf), Ok(n) if n > 0) {}
        }
        Err(StepError::permanent(format!(
            "opened {} sockets, then: {refusal}",
            tcp.len() + udps.len()
        )))
    }
}

export_handler!(Flood);
