//! One outbound HTTP request of an attempt as the host recorded it: made by the sandbox,
//! stored with the attempt's log, shown by the CLI, the API and the page.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpRecord {
    /// Microseconds from the attempt's start to the request.
    pub at_us: u64,
    pub method: String,
    /// Without the query (it may hold data the step was given).
    pub url: String,
    pub status: Option<u16>,
    pub request_bytes: u64,
    pub response_bytes: u64,
    /// From the request to the end of its response body (or its failure).
    pub duration_us: u64,
    /// The host refused it: no connection was made.
    pub refused: bool,
    pub error: Option<String>,
}
