//! Attack: open an outbound TCP connection.
use serde::Deserialize;
use tasker_guest_sdk::{Context, Handler, StepError, export_handler};

#[derive(Deserialize)]
struct Config {
    /// e.g. "127.0.0.1:9"
    addr: String,
}

struct Phone;

impl Handler for Phone {
    fn handle(ctx: Context) -> Result<impl serde::Serialize, StepError> {
        let cfg: Config = ctx.config_as()?;
        let stream = std::net::TcpStream::connect(&cfg.addr)
            .map_err(|e| StepError::retryable(format!("connect {}: {e}", cfg.addr)))?;
        Ok(format!("connected to {:?}", stream.peer_addr().ok()))
    }
}

export_handler!(Phone);
