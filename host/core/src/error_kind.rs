//! The kinds of attempt failure, as recorded on attempts and matched by retry settings.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why an attempt failed. The sandbox reports the first nine; the store adds `LeaseLost`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    Timeout,
    OutOfFuel,
    OutOfMemory,
    Trap,
    CapabilityDenied,
    BadOutput,
    /// The handler's own `step-error`; whether it retries is the handler's call.
    HandlerError,
    /// The plugin could not be found or loaded (it may be deployed later).
    Load,
    /// The plugin does not fit the host's WIT world.
    Incompatible,
    /// The worker's lease expired before it reported a result.
    LeaseLost,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 10] = [
        ErrorKind::Timeout,
        ErrorKind::OutOfFuel,
        ErrorKind::OutOfMemory,
        ErrorKind::Trap,
        ErrorKind::CapabilityDenied,
        ErrorKind::BadOutput,
        ErrorKind::HandlerError,
        ErrorKind::Load,
        ErrorKind::Incompatible,
        ErrorKind::LeaseLost,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::OutOfFuel => "out_of_fuel",
            ErrorKind::OutOfMemory => "out_of_memory",
            ErrorKind::Trap => "trap",
            ErrorKind::CapabilityDenied => "capability_denied",
            ErrorKind::BadOutput => "bad_output",
            ErrorKind::HandlerError => "handler_error",
            ErrorKind::Load => "load",
            ErrorKind::Incompatible => "incompatible",
            ErrorKind::LeaseLost => "lease_lost",
        }
    }

    /// The default retry decision for this kind, before a template's `retry.by_kind`.
    ///
    /// Transient-looking failures retry; failures that will recur with the same code and input
    /// (a budget exceeded, a capability missing, malformed output) do not. `HandlerError`
    /// returns `None`: the handler said retryable or permanent itself.
    pub fn default_retryable(self) -> Option<bool> {
        match self {
            ErrorKind::Timeout | ErrorKind::Trap | ErrorKind::Load | ErrorKind::LeaseLost => {
                Some(true)
            }
            ErrorKind::OutOfFuel
            | ErrorKind::OutOfMemory
            | ErrorKind::CapabilityDenied
            | ErrorKind::BadOutput
            | ErrorKind::Incompatible => Some(false),
            ErrorKind::HandlerError => None,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ErrorKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ErrorKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let known: Vec<_> = ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
                format!("unknown error kind '{s}' (known: {})", known.join(", "))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_defaults() {
        for k in ErrorKind::ALL {
            assert_eq!(k.as_str().parse::<ErrorKind>().unwrap(), k);
        }
        assert_eq!(ErrorKind::Timeout.default_retryable(), Some(true));
        assert_eq!(ErrorKind::OutOfFuel.default_retryable(), Some(false));
        assert_eq!(ErrorKind::HandlerError.default_retryable(), None);
        assert!(
            "oops"
                .parse::<ErrorKind>()
                .unwrap_err()
                .contains("out_of_fuel")
        );
    }
}
