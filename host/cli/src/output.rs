//! How the binary ends: an error printed with each cause once, and a reader that went away
//! (`tasker status 1 | head -1`) ending a command quietly.

/// An error and its causes joined by ": ", each once: a cause whose text a layer above
/// already wrote into its own message (as many errors do with their source, sqlx's and
/// std's included) is not repeated.
pub fn error_text(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if s.is_empty() || out.contains(&s) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&s);
    }
    out
}

/// Restores the default SIGPIPE action, which Rust replaces with an error that `println!`
/// turns into a panic: a write to a closed pipe then ends the process quietly, as it ends
/// any Unix tool. Only where that cannot cut work short: short commands at start, `run`
/// once its worker has stopped.
pub fn end_quietly_on_broken_pipe() {
    #[cfg(unix)]
    // SAFETY: restores the default disposition of one signal; no handler of ours is lost.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    /// Writes its source into its own text, and also returns it as its source.
    #[derive(Debug)]
    struct Wraps(std::io::Error);

    impl std::fmt::Display for Wraps {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "database unavailable: {}", self.0)
        }
    }

    impl std::error::Error for Wraps {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_cause_already_in_its_layers_text_is_printed_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let e = Err::<(), _>(Wraps(io))
            .context("cannot open the store")
            .unwrap_err();
        assert_eq!(
            error_text(&e),
            "cannot open the store: database unavailable: connection refused"
        );
        // Causes that add something are all kept, in order.
        let e = Err::<(), _>(std::io::Error::other("disk full"))
            .context("cannot write x")
            .context("register failed")
            .unwrap_err();
        assert_eq!(error_text(&e), "register failed: cannot write x: disk full");
    }
}
