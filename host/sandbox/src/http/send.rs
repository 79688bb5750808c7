//! Sending one granted request: resolve the host, keep only addresses the rule may reach,
//! connect (counted against the host's descriptor budget), TLS, HTTP/1.1, and bodies that
//! count their bytes, hold their caps and end at the deadline.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tasker_core::http_grant::{Host, HttpPolicy, Scheme, Target};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody};

use super::tls::TlsRoots;
use super::{Shared, request_deadline};
use crate::guard::HostLease;
use crate::limits::ResolvedLimits;

pub(super) struct Job {
    /// Taken when it is sent.
    pub request: Option<http::Request<WasiBody>>,
    pub target: Target,
    pub rule: usize,
    pub policy: Arc<HttpPolicy>,
    pub roots: Arc<TlsRoots>,
    pub limits: Arc<ResolvedLimits>,
    pub shared: Arc<Shared>,
    pub slots: Arc<Semaphore>,
    pub options: Option<RequestOptions>,
    pub record: Option<usize>,
    pub sent_at: Instant,
}

type Sent = (
    http::Response<WasiBody>,
    Box<dyn Future<Output = Result<(), Error>> + Send>,
);

/// The runtime that sends guests' requests: one thread of its own, so that connects and
/// reads are served at once instead of waiting behind guests' polls on the worker threads
/// (with 16 attempts on 2 threads, a connect waited ~1.5 ms there).
fn io_runtime() -> &'static tokio::runtime::Handle {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("tasker-http")
            .enable_all()
            .build()
            .expect("the HTTP I/O runtime starts")
    })
    .handle()
}

/// A task on the I/O runtime, aborted when the attempt drops its future (an attempt that
/// ends takes its requests with it).
struct OnIo<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for OnIo<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> Future for OnIo<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match Pin::new(&mut self.0).poll(cx) {
            Poll::Ready(Ok(v)) => Poll::Ready(v),
            Poll::Ready(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Aborted only by our own drop, so never polled after it.
            Poll::Ready(Err(_)) => Poll::Pending,
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Job {
    /// Sends on the I/O runtime; the response body is read from the attempt's task.
    pub fn spawn(self) -> impl Future<Output = Result<Sent, Error>> + Send {
        OnIo(io_runtime().spawn(self.run()))
    }

    async fn run(self) -> Result<Sent, Error> {
        let shared = self.shared.clone();
        let record = self.record;
        let sent_at = self.sent_at;
        let (deadline, is_attempt_deadline) =
            request_deadline(&self.limits, shared.deadline, sent_at);
        let result = match tokio::time::timeout_at(
            deadline.into(),
            self.exchange(deadline, is_attempt_deadline),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => {
                if is_attempt_deadline {
                    shared.cut_by_deadline.store(true, Ordering::Release);
                }
                Err(Error::ConnectionTimeout)
            }
        };
        if let Err(e) = &result {
            let text = format!("{e}");
            shared.update(record, |r| {
                r.error = Some(text);
                r.duration_us = duration_us(sent_at);
            });
        }
        result
    }

    async fn exchange(self, deadline: Instant, deadline_is_attempt: bool) -> Result<Sent, Error> {
        // Taken apart: the request body is not `Sync`, so no `&self` may cross an await.
        let Job {
            request,
            target,
            rule,
            policy,
            roots,
            limits,
            shared,
            slots,
            options,
            record,
            sent_at,
        } = self;
        let t = &target;
        let what = format!("{} {}", t.method, t.url());
        let mut request = request.ok_or(Error::HttpProtocolError)?;
        // A body declared over the cap is refused before any connection.
        if let Some(n) = declared_length(request.headers())
            && n > limits.http_request_bytes
        {
            let cap = limits.http_request_bytes;
            return Err(over_cap(&shared, &what, Side::Request, n, cap));
        }
        // Waiting for a slot counts towards the request's time: the cap is a queue.
        let permit = slots
            .acquire_owned()
            .await
            .map_err(|_| Error::ConnectionLimitReached)?;
        let addrs = addresses(&target, &policy, rule, &shared, record).await?;
        let lease = HostLease::acquire().ok_or_else(|| {
            shared.denials.record(
                "http",
                format!("{what}: guests hold the host's whole descriptor budget"),
            );
            Error::ConnectionLimitReached
        })?;
        let connect_by = options
            .and_then(|o| o.connect_timeout)
            .map_or(deadline, |d| deadline.min(Instant::now() + d));
        let stream = tokio::time::timeout_at(connect_by.into(), connect(&addrs))
            .await
            .map_err(|_| Error::ConnectionTimeout)??;
        let stream: Box<dyn Stream> = match t.scheme {
            Scheme::Http => Box::new(stream),
            Scheme::Https => Box::new(roots.connect(&t.host, stream).await?),
        };
        let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(Error::Hyper)?;

        // The request line carries only the path: the authority is in the Host header.
        let path = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        *request.uri_mut() = http::Uri::builder()
            .path_and_query(path)
            .build()
            .map_err(|_| Error::HttpRequestUriInvalid)?;
        let declared = declared_length(request.headers());
        let (parts, body) = request.into_parts();
        let kept = Arc::new(Mutex::new(None));
        let body = CountedRequest {
            inner: Some(body),
            sent: 0,
            cap: limits.http_request_bytes,
            declared,
            kept: kept.clone(),
            shared: shared.clone(),
            record,
            what: what.clone(),
        };
        let request = http::Request::from_parts(parts, body.boxed_unsync());

        let first_byte_by = options
            .and_then(|o| o.first_byte_timeout)
            .map_or(deadline, |d| deadline.min(Instant::now() + d));
        let mut conn = Box::pin(conn);
        let mut send = Box::pin(sender.send_request(request));
        // Drive the connection while waiting for the response head.
        let response = tokio::time::timeout_at(
            first_byte_by.into(),
            std::future::poll_fn(|cx| {
                if let Poll::Ready(r) = send.as_mut().poll(cx) {
                    return Poll::Ready(r.map_err(Error::Hyper));
                }
                match conn.as_mut().poll(cx) {
                    Poll::Ready(Err(e)) => Poll::Ready(Err(Error::Hyper(e))),
                    // Closed cleanly: the response (or its error) is ready now.
                    Poll::Ready(Ok(())) => send.as_mut().poll(cx).map_err(Error::Hyper),
                    Poll::Pending => Poll::Pending,
                }
            }),
        )
        .await
        .map_err(|_| Error::ConnectionReadTimeout)??;
        drop(send);

        let status = response.status().as_u16();
        shared.update(record, |r| r.status = Some(status));
        if let Some(n) = declared_length(response.headers())
            && n > limits.http_response_bytes
        {
            let cap = limits.http_response_bytes;
            return Err(over_cap(&shared, &what, Side::Response, n, cap));
        }
        let between = options.and_then(|o| o.between_bytes_timeout);
        let (parts, incoming) = response.into_parts();
        let body = CountedResponse {
            inner: incoming,
            received: 0,
            cap: limits.http_response_bytes,
            shared: shared.clone(),
            record,
            sent_at,
            what,
            deadline: Box::pin(tokio::time::sleep_until(deadline.into())),
            deadline_is_attempt,
            between,
            idle: between.map(|d| Box::pin(tokio::time::sleep(d))),
            _permit: permit,
            _request_body: kept,
            done: false,
        };
        let io = OnIo(io_runtime().spawn(async move {
            // The connection lives (and holds its descriptor) until the body is done.
            let _lease = lease;
            conn.await.map_err(Error::Hyper)
        }));
        Ok((
            http::Response::from_parts(parts, body.boxed_unsync()),
            Box::new(io) as Box<dyn Future<Output = _> + Send>,
        ))
    }
}

/// The addresses the request may connect to: the IP it names, or what the host's resolver
/// gives for the name, less those the rule may not reach.
async fn addresses(
    t: &Target,
    policy: &HttpPolicy,
    rule: usize,
    shared: &Shared,
    record: Option<usize>,
) -> Result<Vec<SocketAddr>, Error> {
    let ips: Vec<IpAddr> = match &t.host {
        Host::Ip(ip) => vec![*ip],
        Host::Name(name) => tokio::net::lookup_host((name.as_str(), t.port))
            .await
            .map_err(|e| Error::DnsError {
                rcode: Some(e.to_string()),
                info_code: None,
            })?
            .map(|a| a.ip())
            .collect(),
    };
    if ips.is_empty() {
        return Err(Error::DestinationNotFound);
    }
    let mut allowed = Vec::new();
    let mut refused = None;
    for ip in ips {
        match policy.may_connect(rule, ip) {
            Ok(()) => allowed.push(SocketAddr::new(ip, t.port)),
            Err(why) => refused = Some(why),
        }
    }
    if allowed.is_empty() {
        let why = format!(
            "{} {}: {} resolves to {}",
            t.method,
            t.url(),
            t.host,
            refused.unwrap_or_default()
        );
        shared.denials.record("http", why);
        shared.update(record, |r| r.refused = true);
        return Err(Error::DestinationIpProhibited);
    }
    Ok(allowed)
}

#[derive(Clone, Copy)]
enum Side {
    Request,
    Response,
}

/// A body declared (or grown) over its cap: recorded, and the error the guest gets.
/// `what` is the request as `METHOD url`.
fn over_cap(shared: &Shared, what: &str, side: Side, n: u64, cap: u64) -> Error {
    let which = match side {
        Side::Request => "request",
        Side::Response => "response",
    };
    shared.denials.record(
        "http",
        format!("{what}: {n} bytes of {which} body are over the http_{which}_bytes cap of {cap}"),
    );
    match side {
        Side::Request => Error::HttpRequestBodySize(Some(n)),
        Side::Response => Error::HttpResponseBodySize(Some(n)),
    }
}

trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> Stream for T {}

async fn connect(addrs: &[SocketAddr]) -> Result<TcpStream, Error> {
    let mut last = None;
    for a in addrs {
        match TcpStream::connect(a).await {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Error::ConnectionRefused,
        Some(e) => Error::Connect(e),
        None => Error::DestinationNotFound,
    })
}

fn declared_length(h: &http::HeaderMap) -> Option<u64> {
    h.get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn duration_us(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// The guest's request body, counted and capped.
struct CountedRequest {
    /// Taken on drop when the body was sent whole (see `kept`).
    inner: Option<WasiBody>,
    sent: u64,
    cap: u64,
    /// The `content-length` the guest declared.
    declared: Option<u64>,
    /// Hyper drops a body as soon as its declared length is written, which closes the
    /// guest's stream while the guest may still flush and finish it: a body sent whole is
    /// kept here, as long as the response, so those calls succeed.
    kept: Arc<Mutex<Option<WasiBody>>>,
    shared: Arc<Shared>,
    record: Option<usize>,
    what: String,
}

impl Drop for CountedRequest {
    fn drop(&mut self) {
        if self.declared == Some(self.sent)
            && let Some(body) = self.inner.take()
            && let Ok(mut kept) = self.kept.lock()
        {
            *kept = Some(body);
        }
    }
}

impl Body for CountedRequest {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let frame = match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(f))) => f,
            other => return other,
        };
        if let Some(data) = frame.data_ref() {
            this.sent += data.len() as u64;
            let sent = this.sent;
            this.shared.update(this.record, |r| r.request_bytes = sent);
            if sent > this.cap {
                let e = over_cap(&this.shared, &this.what, Side::Request, sent, this.cap);
                return Poll::Ready(Some(Err(e)));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint())
    }
}

/// The server's response body, counted, capped, and ended at the request's deadline.
struct CountedResponse {
    inner: hyper::body::Incoming,
    received: u64,
    cap: u64,
    shared: Arc<Shared>,
    record: Option<usize>,
    sent_at: Instant,
    what: String,
    deadline: Pin<Box<tokio::time::Sleep>>,
    deadline_is_attempt: bool,
    between: Option<Duration>,
    idle: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The concurrency slot, held until the body is read or dropped.
    _permit: OwnedSemaphorePermit,
    /// The request body, if it was sent whole: the guest's stream stays open meanwhile.
    _request_body: Arc<Mutex<Option<WasiBody>>>,
    done: bool,
}

impl CountedResponse {
    fn end(&mut self, error: Option<String>) {
        if !self.done {
            self.done = true;
            let (received, took) = (self.received, duration_us(self.sent_at));
            self.shared.update(self.record, |r| {
                r.response_bytes = received;
                r.duration_us = took;
                if error.is_some() {
                    r.error = error;
                }
            });
        }
    }

    fn fail(&mut self, e: Error) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        self.end(Some(e.to_string()));
        Poll::Ready(Some(Err(e)))
    }
}

impl Drop for CountedResponse {
    fn drop(&mut self) {
        self.end(None);
    }
}

impl Body for CountedResponse {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                this.end(None);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => this.fail(Error::Hyper(e)),
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                    if this.received > this.cap {
                        let (n, cap) = (this.received, this.cap);
                        let e = over_cap(&this.shared, &this.what, Side::Response, n, cap);
                        return this.fail(e);
                    }
                }
                if let (Some(idle), Some(d)) = (this.idle.as_mut(), this.between) {
                    idle.as_mut().reset((Instant::now() + d).into());
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => {
                if this.deadline.as_mut().poll(cx).is_ready() {
                    if this.deadline_is_attempt {
                        this.shared.cut_by_deadline.store(true, Ordering::Release);
                    }
                    return this.fail(Error::ConnectionReadTimeout);
                }
                if let Some(idle) = this.idle.as_mut()
                    && idle.as_mut().poll(cx).is_ready()
                {
                    return this.fail(Error::ConnectionReadTimeout);
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
