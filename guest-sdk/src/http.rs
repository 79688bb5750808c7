//! Outbound HTTP over `wasi:http`: a small blocking client.
//!
//! Every request goes through the host, which checks it against the step's `grants.http`
//! before any connection, resolves the name itself, applies the attempt's limits and records
//! the request with the attempt. A refused request fails with
//! [`ErrorCode::HttpRequestDenied`] (or [`ErrorCode::DestinationIpProhibited`] for a name
//! that resolves to a private address). The host does not follow redirects: a 3xx is an
//! ordinary response here, and following its `Location` is a new request, checked again.
//!
//! Secrets stay on the host: write [`secret("NAME")`](secret) (the placeholder
//! `{{secret:NAME}}`) in a header value and the host substitutes the value granted in
//! `grants.secrets`, for granted URLs only.
//!
//! ```no_run
//! use std::time::Duration;
//! use tasker_guest_sdk::{Context, Handler, StepError, export_handler, http, json};
//!
//! struct Charge;
//!
//! impl Handler for Charge {
//!     fn handle(ctx: Context) -> Result<impl serde::Serialize, StepError> {
//!         let amount: u64 = ctx.config_field("amount")?;
//!         // 429/503 with Retry-After become StepError::retry_after, other 5xx are
//!         // retryable, 4xx are permanent (`?` converts through From<HttpError>).
//!         let resp = http::post("https://api.stripe.test/v1/charges")
//!             .header("authorization", format!("Bearer {}", http::secret("STRIPE_KEY")))
//!             .json(&json!({ "amount": amount }))
//!             .timeout(Duration::from_secs(10))
//!             .send()?
//!             .error_for_status()?;
//!         let charge: serde_json::Value = resp.json()?;
//!
//!         // Several requests at once: all in flight together, results in order.
//!         let pages = http::send_all(vec![
//!             http::get("https://api.stripe.test/v1/a"),
//!             http::get("https://api.stripe.test/v1/b"),
//!         ]);
//!         let sizes: Vec<usize> = pages
//!             .into_iter()
//!             .map(|r| r.map(|resp| resp.body().len()))
//!             .collect::<Result<_, _>>()?;
//!         Ok(json!({ "charge": charge, "sizes": sizes }))
//!     }
//! }
//!
//! export_handler!(Charge);
//! # fn main() {}
//! ```

use std::fmt;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::StepError;
use crate::bindings::wasi::http::outgoing_handler;
pub use crate::bindings::wasi::http::types::ErrorCode;
use crate::bindings::wasi::http::types::{
    self, Fields, FutureIncomingResponse, IncomingBody, IncomingResponse, Method, OutgoingBody,
    OutgoingRequest, RequestOptions, Scheme,
};
use crate::bindings::wasi::io::poll::{self, Pollable};
use crate::bindings::wasi::io::streams::{InputStream, OutputStream, StreamError};

/// A `GET` request to `url`.
pub fn get(url: impl Into<String>) -> Request {
    request("GET", url)
}

/// A `POST` request to `url`.
pub fn post(url: impl Into<String>) -> Request {
    request("POST", url)
}

/// A `PUT` request to `url`.
pub fn put(url: impl Into<String>) -> Request {
    request("PUT", url)
}

/// A `DELETE` request to `url`.
pub fn delete(url: impl Into<String>) -> Request {
    request("DELETE", url)
}

/// A request with any method (`"GET"`, `"PATCH"`, ...; methods are case-sensitive).
pub fn request(method: impl Into<String>, url: impl Into<String>) -> Request {
    Request {
        method: method.into(),
        url: url.into(),
        headers: Vec::new(),
        body: None,
        timeout: None,
        invalid: None,
    }
}

/// The placeholder for a host-held secret, `{{secret:NAME}}`: put it in a header value and
/// the host replaces it with the secret granted to the step (`grants.secrets`).
pub fn secret(name: &str) -> String {
    format!("{{{{secret:{name}}}}}")
}

/// An HTTP request, built with [`get`], [`post`] or [`request`] and sent with
/// [`send`](Request::send) or [`send_all`].
#[derive(Debug, Clone)]
pub struct Request {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    timeout: Option<Duration>,
    /// A builder failure (say, a body that does not serialize), reported by `send`.
    invalid: Option<String>,
}

impl Request {
    /// Add a header (repeated names are all sent).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The request body. A `content-length` header is added unless one is set.
    pub fn body(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.body = Some(bytes.into());
        self
    }

    /// `value` as a JSON body, with `content-type: application/json` unless one is set.
    pub fn json<T: Serialize + ?Sized>(mut self, value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(bytes) => {
                if !has_header(&self.headers, "content-type") {
                    self.headers
                        .push(("content-type".into(), "application/json".into()));
                }
                self.body = Some(bytes);
            }
            Err(e) => self.invalid = Some(format!("request body is not serializable: {e}")),
        }
        self
    }

    /// Connect, first-byte and between-bytes timeout (the host also bounds every request by
    /// the step's `http_timeout_ms` and the attempt's deadline).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The request's URL, as given.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The request's method.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// Send it and wait for the whole response (status, headers and body). A status of 4xx
    /// or 5xx is not an error here: see [`Response::error_for_status`].
    pub fn send(self) -> Result<Response, HttpError> {
        send_all(vec![self])
            .pop()
            .expect("send_all returns one result per request")
    }
}

/// Send all `requests` at once (all in flight together, as far as the step's
/// `http_concurrency` allows) and wait for every response; the results are in the order of
/// `requests`.
pub fn send_all(requests: Vec<Request>) -> Vec<Result<Response, HttpError>> {
    let mut flights: Vec<Flight> = requests.into_iter().map(Flight::start).collect();
    loop {
        // Pollables are children of the futures and streams: drop them before advancing.
        let ready: Vec<usize> = {
            let waiting: Vec<(usize, Pollable)> = flights
                .iter()
                .enumerate()
                .filter_map(|(i, f)| f.state.pollable().map(|p| (i, p)))
                .collect();
            if waiting.is_empty() {
                break;
            }
            let refs: Vec<&Pollable> = waiting.iter().map(|(_, p)| p).collect();
            poll::poll(&refs)
                .into_iter()
                .map(|j| waiting[j as usize].0)
                .collect()
        };
        for i in ready {
            flights[i].advance();
        }
    }
    flights
        .into_iter()
        .map(|f| match f.state {
            State::Done(result) => result,
            _ => unreachable!("every flight ends done"),
        })
        .collect()
}

/// A whole response.
#[derive(Debug, Clone)]
pub struct Response {
    url: String,
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// All headers in the order received (values not valid UTF-8 are converted lossily).
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body's bytes.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body, taken.
    pub fn into_body(self) -> Vec<u8> {
        self.body
    }

    /// The body as text (invalid UTF-8 converted lossily).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON. A body that is not the JSON asked for is a permanent error.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, HttpError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            HttpError::new(
                &self.url,
                ErrorKind::Decode(format!("response body is not the JSON expected: {e}")),
            )
        })
    }

    /// The URL requested.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `Ok(self)` below 400; a 4xx or 5xx becomes an [`ErrorKind::Status`], with the
    /// `Retry-After` delay (in seconds) of a 429 or 503.
    pub fn error_for_status(self) -> Result<Response, HttpError> {
        if self.status < 400 {
            return Ok(self);
        }
        let retry_after = match self.status {
            429 | 503 => self.header("retry-after").and_then(parse_retry_after),
            _ => None,
        };
        Err(HttpError::new(
            &self.url,
            ErrorKind::Status {
                code: self.status,
                retry_after,
            },
        ))
    }
}

/// A failed request.
#[derive(Debug, Clone)]
pub struct HttpError {
    /// The URL without its query, fragment or user info.
    pub url: String,
    pub kind: ErrorKind,
}

/// What went wrong.
#[derive(Debug, Clone)]
pub enum ErrorKind {
    /// The host (or the connection) failed the request: refused by the grant
    /// ([`ErrorCode::HttpRequestDenied`]), a private address, a timeout, a body over the limit...
    Transport(ErrorCode),
    /// [`Response::error_for_status`] on a 4xx or 5xx.
    Status {
        code: u16,
        retry_after: Option<Duration>,
    },
    /// The request could not be built (a bad header, a body that does not serialize).
    InvalidRequest(String),
    /// The response body is not what [`Response::json`] was asked for.
    Decode(String),
}

impl HttpError {
    fn new(url: &str, kind: ErrorKind) -> Self {
        Self {
            url: url_for_display(url),
            kind,
        }
    }

    fn transport(url: &str, code: ErrorCode) -> Self {
        Self::new(url, ErrorKind::Transport(code))
    }

    /// The wasi:http error code's name (`"HttpRequestDenied"`), `"Status"`,
    /// `"InvalidRequest"` or `"Decode"`.
    pub fn code(&self) -> &'static str {
        match &self.kind {
            ErrorKind::Transport(code) => code_name(code),
            ErrorKind::Status { .. } => "Status",
            ErrorKind::InvalidRequest(_) => "InvalidRequest",
            ErrorKind::Decode(_) => "Decode",
        }
    }

    /// The status code of an [`ErrorKind::Status`].
    pub fn status(&self) -> Option<u16> {
        match self.kind {
            ErrorKind::Status { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The delay a 429 or 503 asked for.
    pub fn retry_after(&self) -> Option<Duration> {
        match self.kind {
            ErrorKind::Status { retry_after, .. } => retry_after,
            _ => None,
        }
    }

    /// Whether running the step again can help: 429 and 5xx, and transport failures except
    /// refusals and invalid requests (a refusal is the grant's, the same next time).
    pub fn is_retryable(&self) -> bool {
        match &self.kind {
            ErrorKind::Status { code, .. } => status_is_retryable(*code),
            ErrorKind::Transport(code) => !matches!(
                code,
                ErrorCode::HttpRequestDenied
                    | ErrorCode::DestinationIpProhibited
                    | ErrorCode::HttpRequestUriInvalid
                    | ErrorCode::HttpRequestMethodInvalid
            ),
            ErrorKind::InvalidRequest(_) | ErrorKind::Decode(_) => false,
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP request to {} failed: ", self.url)?;
        match &self.kind {
            ErrorKind::Transport(code) => {
                f.write_str(code_name(code))?;
                match code_detail(code) {
                    Some(detail) => write!(f, " ({detail})"),
                    None => Ok(()),
                }
            }
            ErrorKind::Status { code, retry_after } => {
                write!(f, "status {code}")?;
                match retry_after {
                    Some(d) => write!(f, " (retry after {}s)", d.as_secs()),
                    None => Ok(()),
                }
            }
            ErrorKind::InvalidRequest(msg) => write!(f, "InvalidRequest: {msg}"),
            ErrorKind::Decode(msg) => write!(f, "Decode: {msg}"),
        }
    }
}

impl std::error::Error for HttpError {}

/// 429/503 with `Retry-After` → [`StepError::retry_after`]; other retryable failures →
/// [`StepError::retryable`]; 4xx, refusals and invalid requests → [`StepError::permanent`].
impl From<HttpError> for StepError {
    fn from(e: HttpError) -> Self {
        let message = e.to_string();
        match e.retry_after() {
            Some(d) => {
                StepError::retry_after(message, u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            }
            None if e.is_retryable() => StepError::retryable(message),
            None => StepError::permanent(message),
        }
    }
}

/// 429 and every 5xx are worth another try; any other 4xx is the request's fault.
fn status_is_retryable(code: u16) -> bool {
    code == 429 || (500..600).contains(&code)
}

/// `Retry-After` in delta-seconds. An HTTP date (or anything else) gives no delay.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let v = value.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Absurdly long digit strings saturate rather than fail.
    Some(Duration::from_secs(v.parse::<u64>().unwrap_or(u64::MAX)))
}

/// The name of a wasi:http error code, as its Rust variant.
pub fn code_name(code: &ErrorCode) -> &'static str {
    use ErrorCode as E;
    match code {
        E::DnsTimeout => "DnsTimeout",
        E::DnsError(_) => "DnsError",
        E::DestinationNotFound => "DestinationNotFound",
        E::DestinationUnavailable => "DestinationUnavailable",
        E::DestinationIpProhibited => "DestinationIpProhibited",
        E::DestinationIpUnroutable => "DestinationIpUnroutable",
        E::ConnectionRefused => "ConnectionRefused",
        E::ConnectionTerminated => "ConnectionTerminated",
        E::ConnectionTimeout => "ConnectionTimeout",
        E::ConnectionReadTimeout => "ConnectionReadTimeout",
        E::ConnectionWriteTimeout => "ConnectionWriteTimeout",
        E::ConnectionLimitReached => "ConnectionLimitReached",
        E::TlsProtocolError => "TlsProtocolError",
        E::TlsCertificateError => "TlsCertificateError",
        E::TlsAlertReceived(_) => "TlsAlertReceived",
        E::HttpRequestDenied => "HttpRequestDenied",
        E::HttpRequestLengthRequired => "HttpRequestLengthRequired",
        E::HttpRequestBodySize(_) => "HttpRequestBodySize",
        E::HttpRequestMethodInvalid => "HttpRequestMethodInvalid",
        E::HttpRequestUriInvalid => "HttpRequestUriInvalid",
        E::HttpRequestUriTooLong => "HttpRequestUriTooLong",
        E::HttpRequestHeaderSectionSize(_) => "HttpRequestHeaderSectionSize",
        E::HttpRequestHeaderSize(_) => "HttpRequestHeaderSize",
        E::HttpRequestTrailerSectionSize(_) => "HttpRequestTrailerSectionSize",
        E::HttpRequestTrailerSize(_) => "HttpRequestTrailerSize",
        E::HttpResponseIncomplete => "HttpResponseIncomplete",
        E::HttpResponseHeaderSectionSize(_) => "HttpResponseHeaderSectionSize",
        E::HttpResponseHeaderSize(_) => "HttpResponseHeaderSize",
        E::HttpResponseBodySize(_) => "HttpResponseBodySize",
        E::HttpResponseTrailerSectionSize(_) => "HttpResponseTrailerSectionSize",
        E::HttpResponseTrailerSize(_) => "HttpResponseTrailerSize",
        E::HttpResponseTransferCoding(_) => "HttpResponseTransferCoding",
        E::HttpResponseContentCoding(_) => "HttpResponseContentCoding",
        E::HttpResponseTimeout => "HttpResponseTimeout",
        E::HttpUpgradeFailed => "HttpUpgradeFailed",
        E::HttpProtocolError => "HttpProtocolError",
        E::LoopDetected => "LoopDetected",
        E::ConfigurationError => "ConfigurationError",
        E::InternalError(_) => "InternalError",
    }
}

/// The payload of an error code worth showing, if any.
fn code_detail(code: &ErrorCode) -> Option<String> {
    use ErrorCode as E;
    match code {
        E::DnsError(p) => match (&p.rcode, p.info_code) {
            (None, None) => None,
            (rcode, info) => Some(format!(
                "rcode {}, info code {}",
                rcode.as_deref().unwrap_or("-"),
                info.map_or_else(|| "-".to_string(), |c| c.to_string())
            )),
        },
        E::TlsAlertReceived(p) => p.alert_message.clone(),
        E::HttpRequestBodySize(Some(n)) | E::HttpResponseBodySize(Some(n)) => {
            Some(format!("{n} bytes"))
        }
        E::HttpResponseTransferCoding(Some(s))
        | E::HttpResponseContentCoding(Some(s))
        | E::InternalError(Some(s)) => Some(s.clone()),
        _ => None,
    }
}

/// The parts of a URL wasi:http wants.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    scheme: String,
    authority: String,
    path_with_query: String,
}

/// `scheme://authority[/path][?query][#fragment]`; user info is refused (secrets go in
/// headers, through [`secret`]).
fn parse_url(url: &str) -> Option<Target> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok || rest.chars().any(|c| c.is_ascii_control() || c == ' ') {
        return None;
    }
    let rest = rest.split('#').next().unwrap_or_default();
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let path_with_query = match path {
        "" => "/".to_string(),
        p if p.starts_with('?') => format!("/{p}"),
        p => p.to_string(),
    };
    Some(Target {
        scheme: scheme.to_ascii_lowercase(),
        authority: authority.to_string(),
        path_with_query,
    })
}

/// The URL for messages: no query or fragment (they often carry tokens), no user info.
fn url_for_display(url: &str) -> String {
    let cut = url.find(['?', '#']).unwrap_or(url.len());
    let url = &url[..cut];
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let end = rest.find('/').unwrap_or(rest.len());
            let (authority, path) = rest.split_at(end);
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            format!("{scheme}://{host}{path}")
        }
        None => url.to_string(),
    }
}

fn has_header(headers: &[(String, String)], name: &str) -> bool {
    headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name))
}

fn method_of(name: &str) -> Method {
    match name {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "CONNECT" => Method::Connect,
        "OPTIONS" => Method::Options,
        "TRACE" => Method::Trace,
        "PATCH" => Method::Patch,
        other => Method::Other(other.to_string()),
    }
}

/// Read responses in chunks of this size.
const READ_CHUNK: u64 = 64 * 1024;

/// One request on its way.
struct Flight {
    url: String,
    state: State,
}

// Field order matters: Rust drops in declaration order, and a stream (child) must go before
// its body, a body before its request or response.
enum State {
    Writing {
        stream: OutputStream,
        body: OutgoingBody,
        future: FutureIncomingResponse,
        data: Vec<u8>,
        written: usize,
        flushing: bool,
    },
    Waiting {
        future: FutureIncomingResponse,
        /// Why writing the body failed, if it did: reported if the response has no better error.
        write_error: Option<ErrorCode>,
    },
    Reading {
        stream: InputStream,
        body: IncomingBody,
        response: IncomingResponse,
        status: u16,
        headers: Vec<(String, String)>,
        data: Vec<u8>,
    },
    Done(Result<Response, HttpError>),
}

impl State {
    fn pollable(&self) -> Option<Pollable> {
        match self {
            State::Writing { stream, .. } => Some(stream.subscribe()),
            State::Waiting { future, .. } => Some(future.subscribe()),
            State::Reading { stream, .. } => Some(stream.subscribe()),
            State::Done(_) => None,
        }
    }
}

impl Flight {
    /// Hand the request to the host; bodies are written as the stream accepts them.
    fn start(req: Request) -> Flight {
        let state = match Self::begin(&req) {
            Ok(state) => state,
            Err(e) => State::Done(Err(e)),
        };
        let mut flight = Flight {
            url: req.url,
            state,
        };
        // Nothing to wait for before the first write or read attempt.
        flight.advance();
        flight
    }

    fn begin(req: &Request) -> Result<State, HttpError> {
        let url = &req.url;
        if let Some(msg) = &req.invalid {
            return Err(HttpError::new(url, ErrorKind::InvalidRequest(msg.clone())));
        }
        let target = parse_url(url)
            .ok_or_else(|| HttpError::transport(url, ErrorCode::HttpRequestUriInvalid))?;
        let mut entries: Vec<(String, Vec<u8>)> = req
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
            .collect();
        if let Some(body) = &req.body
            && !has_header(&req.headers, "content-length")
        {
            entries.push(("content-length".into(), body.len().to_string().into_bytes()));
        }
        let invalid = |what: String| HttpError::new(url, ErrorKind::InvalidRequest(what));
        let fields = Fields::from_list(&entries)
            .map_err(|e| invalid(format!("invalid or forbidden header: {e:?}")))?;
        let request = OutgoingRequest::new(fields);
        let scheme = match target.scheme.as_str() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            other => Scheme::Other(other.to_string()),
        };
        request
            .set_method(&method_of(&req.method))
            .map_err(|()| HttpError::transport(url, ErrorCode::HttpRequestMethodInvalid))?;
        request
            .set_scheme(Some(&scheme))
            .and_then(|()| request.set_authority(Some(&target.authority)))
            .and_then(|()| request.set_path_with_query(Some(&target.path_with_query)))
            .map_err(|()| HttpError::transport(url, ErrorCode::HttpRequestUriInvalid))?;
        let options = req.timeout.map(|t| {
            let ns = u64::try_from(t.as_nanos()).unwrap_or(u64::MAX);
            let options = RequestOptions::new();
            // A host that does not support a timeout keeps its own: fine.
            let _ = options.set_connect_timeout(Some(ns));
            let _ = options.set_first_byte_timeout(Some(ns));
            let _ = options.set_between_bytes_timeout(Some(ns));
            options
        });
        // The body must be taken before the request is handed over.
        let body = match &req.body {
            Some(_) => Some(request.body().map_err(|()| {
                HttpError::transport(
                    url,
                    ErrorCode::InternalError(Some("request body taken".into())),
                )
            })?),
            None => None,
        };
        let future = outgoing_handler::handle(request, options)
            .map_err(|code| HttpError::transport(url, code))?;
        Ok(match (body, &req.body) {
            (Some(body), Some(data)) => match body.write() {
                Ok(stream) => State::Writing {
                    stream,
                    body,
                    future,
                    data: data.clone(),
                    written: 0,
                    flushing: false,
                },
                Err(()) => State::Waiting {
                    future,
                    write_error: Some(ErrorCode::InternalError(Some(
                        "request body stream taken".into(),
                    ))),
                },
            },
            _ => State::Waiting {
                future,
                write_error: None,
            },
        })
    }

    /// Move on as far as possible without blocking.
    fn advance(&mut self) {
        loop {
            let state = std::mem::replace(&mut self.state, State::Done(Err(placeholder())));
            let (next, progressed) = self.step(state);
            self.state = next;
            if !progressed || matches!(self.state, State::Done(_)) {
                return;
            }
        }
    }

    /// One non-blocking step: the next state, and whether it is worth trying again at once.
    fn step(&self, state: State) -> (State, bool) {
        let url = &self.url;
        match state {
            State::Writing {
                stream,
                body,
                future,
                data,
                mut written,
                mut flushing,
            } => {
                let fail = |e: StreamError, stream: OutputStream, body: OutgoingBody, future| {
                    // Dropping the body unfinished aborts the request; the response says why.
                    drop(stream);
                    drop(body);
                    let write_error = Some(stream_error_code(e));
                    (
                        State::Waiting {
                            future,
                            write_error,
                        },
                        true,
                    )
                };
                let permit = match stream.check_write() {
                    Ok(n) => n,
                    Err(e) => return fail(e, stream, body, future),
                };
                if permit == 0 {
                    let state = State::Writing {
                        stream,
                        body,
                        future,
                        data,
                        written,
                        flushing,
                    };
                    return (state, false);
                }
                if flushing {
                    // Flushed: every byte reached the host.
                    drop(stream);
                    return match OutgoingBody::finish(body, None) {
                        Ok(()) => (
                            State::Waiting {
                                future,
                                write_error: None,
                            },
                            true,
                        ),
                        Err(code) => (
                            State::Waiting {
                                future,
                                write_error: Some(code),
                            },
                            true,
                        ),
                    };
                }
                let n = usize::try_from(permit)
                    .unwrap_or(usize::MAX)
                    .min(data.len() - written);
                if n > 0 {
                    if let Err(e) = stream.write(&data[written..written + n]) {
                        return fail(e, stream, body, future);
                    }
                    written += n;
                }
                if written == data.len() {
                    if let Err(e) = stream.flush() {
                        return fail(e, stream, body, future);
                    }
                    flushing = true;
                }
                (
                    State::Writing {
                        stream,
                        body,
                        future,
                        data,
                        written,
                        flushing,
                    },
                    true,
                )
            }
            State::Waiting {
                future,
                write_error,
            } => match future.get() {
                None => (
                    State::Waiting {
                        future,
                        write_error,
                    },
                    false,
                ),
                Some(Err(())) => (
                    State::Done(Err(HttpError::transport(
                        url,
                        ErrorCode::InternalError(Some("response already taken".into())),
                    ))),
                    false,
                ),
                Some(Ok(Err(code))) => (State::Done(Err(HttpError::transport(url, code))), false),
                Some(Ok(Ok(response))) => {
                    if let Some(code) = write_error {
                        return (State::Done(Err(HttpError::transport(url, code))), false);
                    }
                    let status = response.status();
                    let headers = response
                        .headers()
                        .entries()
                        .into_iter()
                        .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
                        .collect();
                    let internal = |what: &str| {
                        State::Done(Err(HttpError::transport(
                            url,
                            ErrorCode::InternalError(Some(what.into())),
                        )))
                    };
                    let Ok(body) = response.consume() else {
                        return (internal("response body taken"), false);
                    };
                    let Ok(stream) = body.stream() else {
                        return (internal("response body stream taken"), false);
                    };
                    let state = State::Reading {
                        stream,
                        body,
                        response,
                        status,
                        headers,
                        data: Vec::new(),
                    };
                    (state, true)
                }
            },
            State::Reading {
                stream,
                body,
                response,
                status,
                headers,
                mut data,
            } => match stream.read(READ_CHUNK) {
                Ok(chunk) if chunk.is_empty() => {
                    let state = State::Reading {
                        stream,
                        body,
                        response,
                        status,
                        headers,
                        data,
                    };
                    (state, false)
                }
                Ok(chunk) => {
                    data.extend_from_slice(&chunk);
                    let state = State::Reading {
                        stream,
                        body,
                        response,
                        status,
                        headers,
                        data,
                    };
                    (state, true)
                }
                Err(StreamError::Closed) => {
                    drop(stream);
                    drop(body);
                    drop(response);
                    let response = Response {
                        url: url.clone(),
                        status,
                        headers,
                        body: data,
                    };
                    (State::Done(Ok(response)), false)
                }
                Err(e) => {
                    let code = stream_error_code(e);
                    // Children first: the host refuses to drop a response whose body lives.
                    drop(stream);
                    drop(body);
                    drop(response);
                    (State::Done(Err(HttpError::transport(url, code))), false)
                }
            },
            done @ State::Done(_) => (done, false),
        }
    }
}

/// The wasi:http code behind a stream failure (a body over the limit, a reset connection).
fn stream_error_code(e: StreamError) -> ErrorCode {
    match e {
        StreamError::LastOperationFailed(err) => {
            types::http_error_code(&err).unwrap_or_else(|| code_from_text(&err.to_debug_string()))
        }
        StreamError::Closed => ErrorCode::ConnectionTerminated,
    }
}

/// wasmtime-wasi-http 48 hands body-stream failures to the guest as plain text (they do not
/// downcast to an error code): the host's texts for the failures it makes mid-body, back
/// to their codes.
fn code_from_text(text: &str) -> ErrorCode {
    let text = text.trim();
    if text.starts_with("connection read timeout") {
        ErrorCode::ConnectionReadTimeout
    } else if text.starts_with("HTTP response timeout") {
        ErrorCode::HttpResponseTimeout
    } else if text.starts_with("connection terminated") {
        ErrorCode::ConnectionTerminated
    } else if let Some(rest) = text.strip_prefix("HTTP response body size exceeds limit") {
        let n = rest
            .trim_start_matches(": ")
            .trim_end_matches(" bytes")
            .parse()
            .ok();
        ErrorCode::HttpResponseBodySize(n)
    } else if let Some(rest) = text.strip_prefix("HTTP request body size exceeds limit") {
        let n = rest
            .trim_start_matches(": ")
            .trim_end_matches(" bytes")
            .parse()
            .ok();
        ErrorCode::HttpRequestBodySize(n)
    } else {
        ErrorCode::InternalError(Some(text.to_string()))
    }
}

/// Stands in for a state while it is being moved on.
fn placeholder() -> HttpError {
    HttpError::new("", ErrorKind::Decode(String::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_failures_given_as_text_get_their_codes_back() {
        assert!(matches!(
            code_from_text("connection read timeout"),
            ErrorCode::ConnectionReadTimeout
        ));
        assert!(matches!(
            code_from_text("HTTP response body size exceeds limit: 3 bytes"),
            ErrorCode::HttpResponseBodySize(Some(3))
        ));
        assert!(matches!(
            code_from_text("something else"),
            ErrorCode::InternalError(Some(_))
        ));
    }

    fn response(status: u16, headers: &[(&str, &str)]) -> Response {
        Response {
            url: "https://api.example.com/v1/charges?key=secret".into(),
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: Vec::new(),
        }
    }

    fn step_error(status: u16, headers: &[(&str, &str)]) -> StepError {
        response(status, headers)
            .error_for_status()
            .unwrap_err()
            .into()
    }

    #[test]
    fn retry_after_in_seconds_only() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("1.5"), None);
        assert_eq!(parse_retry_after(""), None);
        assert_eq!(
            parse_retry_after("99999999999999999999999"),
            Some(Duration::from_secs(u64::MAX))
        );
    }

    #[test]
    fn success_and_redirects_are_not_errors() {
        for status in [200, 201, 204, 301, 302, 304, 399] {
            assert!(response(status, &[]).error_for_status().is_ok(), "{status}");
        }
    }

    #[test]
    fn rate_limits_wait_as_asked() {
        let msg = "HTTP request to https://api.example.com/v1/charges failed: status 429 (retry after 3s)";
        assert_eq!(
            step_error(429, &[("Retry-After", "3")]),
            StepError::retry_after(msg, 3000)
        );
        assert_eq!(
            step_error(503, &[("retry-after", "7")]).clone(),
            StepError::Retryable {
                message: "HTTP request to https://api.example.com/v1/charges failed: status 503 (retry after 7s)".into(),
                retry_after_ms: Some(7000),
            }
        );
        // A date is not understood: retryable, no delay.
        let e = step_error(429, &[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")]);
        assert!(
            matches!(
                e,
                StepError::Retryable {
                    retry_after_ms: None,
                    ..
                }
            ),
            "{e:?}"
        );
        let e = step_error(503, &[]);
        assert!(
            matches!(
                e,
                StepError::Retryable {
                    retry_after_ms: None,
                    ..
                }
            ),
            "{e:?}"
        );
        // Retry-After on another status is ignored.
        let e = step_error(500, &[("retry-after", "5")]);
        assert!(
            matches!(
                e,
                StepError::Retryable {
                    retry_after_ms: None,
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn server_errors_retry_client_errors_do_not() {
        for status in [500, 502, 504, 599] {
            assert!(
                matches!(step_error(status, &[]), StepError::Retryable { .. }),
                "{status}"
            );
        }
        for status in [400, 401, 403, 404, 409, 410, 418, 422, 499] {
            assert!(
                matches!(step_error(status, &[]), StepError::Permanent(_)),
                "{status}"
            );
        }
        assert_eq!(
            step_error(404, &[]).message(),
            "HTTP request to https://api.example.com/v1/charges failed: status 404"
        );
    }

    #[test]
    fn transport_errors_retry_unless_refused() {
        let err = |code| -> StepError {
            HttpError::transport("http://127.0.0.1:9/x?token=t", code).into()
        };
        for code in [
            ErrorCode::HttpRequestDenied,
            ErrorCode::DestinationIpProhibited,
            ErrorCode::HttpRequestUriInvalid,
        ] {
            assert!(matches!(err(code), StepError::Permanent(_)));
        }
        for code in [
            ErrorCode::ConnectionTimeout,
            ErrorCode::ConnectionRefused,
            ErrorCode::HttpResponseBodySize(Some(10)),
            ErrorCode::DnsTimeout,
        ] {
            assert!(matches!(
                err(code),
                StepError::Retryable {
                    retry_after_ms: None,
                    ..
                }
            ));
        }
        assert_eq!(
            err(ErrorCode::HttpRequestDenied).message(),
            "HTTP request to http://127.0.0.1:9/x failed: HttpRequestDenied"
        );
        assert_eq!(
            err(ErrorCode::HttpResponseBodySize(Some(10))).message(),
            "HTTP request to http://127.0.0.1:9/x failed: HttpResponseBodySize (10 bytes)"
        );
        assert_eq!(
            err(ErrorCode::InternalError(Some("boom".into()))).message(),
            "HTTP request to http://127.0.0.1:9/x failed: InternalError (boom)"
        );
    }

    #[test]
    fn invalid_requests_and_bodies_are_permanent() {
        let e: StepError = HttpError::new("http://a/", ErrorKind::Decode("x".into())).into();
        assert!(matches!(e, StepError::Permanent(_)));
        let e: StepError =
            HttpError::new("http://a/", ErrorKind::InvalidRequest("x".into())).into();
        assert!(matches!(e, StepError::Permanent(_)));
    }

    #[test]
    fn urls_split_for_wasi_http() {
        let t = |scheme: &str, authority: &str, path: &str| Target {
            scheme: scheme.into(),
            authority: authority.into(),
            path_with_query: path.into(),
        };
        assert_eq!(
            parse_url("https://api.example.com/v1/charges?x=1#frag"),
            Some(t("https", "api.example.com", "/v1/charges?x=1"))
        );
        assert_eq!(
            parse_url("http://127.0.0.1:8080"),
            Some(t("http", "127.0.0.1:8080", "/"))
        );
        assert_eq!(parse_url("HTTP://h?q=1"), Some(t("http", "h", "/?q=1")));
        assert_eq!(
            parse_url("http://[::1]:80/a"),
            Some(t("http", "[::1]:80", "/a"))
        );
        for bad in [
            "",
            "example.com/x",
            "http://",
            "http:///x",
            "http://u:p@h/",
            "1http://h/",
            "http://h/a b",
        ] {
            assert_eq!(parse_url(bad), None, "{bad}");
        }
    }

    #[test]
    fn urls_shown_without_query_or_credentials() {
        assert_eq!(url_for_display("https://h/p?token=abc#f"), "https://h/p");
        assert_eq!(url_for_display("https://u:pw@h:1/p"), "https://h:1/p");
        assert_eq!(url_for_display("http://h?x"), "http://h");
        assert_eq!(url_for_display("not a url?x"), "not a url");
    }

    #[test]
    fn builder_collects_headers_and_json() {
        let r = post("http://h/").json(&serde_json::json!({"a": 1}));
        assert_eq!(r.body.as_deref(), Some(&b"{\"a\":1}"[..]));
        assert_eq!(
            r.headers,
            vec![("content-type".into(), "application/json".into())]
        );
        let r = post("http://h/")
            .header("Content-Type", "application/vnd+json")
            .json(&1);
        assert_eq!(r.headers.len(), 1);
        assert_eq!(secret("API_KEY"), "{{secret:API_KEY}}");
        let resp = response(200, &[("X-A", "1"), ("x-a", "2")]);
        assert_eq!(resp.header("x-A"), Some("1"));
    }
}
