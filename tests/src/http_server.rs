//! A real HTTP server and an HTTPS server on loopback, in the test process, that the
//! outbound-HTTP tests point guests at: a few routes that misbehave on purpose, and a record
//! of every request and connection, so a test can say what reached the server (and what did
//! not). HTTPS uses a test CA made once per process (so one sandbox trusts every server of
//! the process); its certificate is in [`ca_file`], which the sandbox takes as
//! `HttpConfig::extra_ca_file`.
//!
//! Routes (any method unless said):
//! - `/echo`: JSON `{method, path, query, headers, body}` of the request.
//! - `/bytes/{n}`: `n` bytes of `x`.
//! - `/status/{code}?retry_after=S`: that status, with `Retry-After: S` if asked.
//! - `/redirect?to=URL`: 302 to `URL`.
//! - `/drip`: the headers, then one byte a second, forever.
//! - `/flaky/{key}?fail=N&retry_after=S`: the first `N` calls per key get 429 (with
//!   `Retry-After: S`, default 1), later ones 200.
//! - `/slow-headers?ms=N`: the headers after `N` ms (the time counts as in flight).

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Json, Router};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// The names the leaf certificate is valid for (and the IP 127.0.0.1).
pub const TLS_NAMES: [&str; 2] = ["localhost", "api.tasker.test"];

/// One request as it reached the server.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// Names lower-case, in the order received.
    pub headers: Vec<(String, String)>,
    /// Whether it came over TLS.
    pub tls: bool,
    pub at: Instant,
}

#[derive(Default)]
struct Shared {
    seen: Mutex<Vec<Seen>>,
    flaky: Mutex<HashMap<String, u32>>,
    connections: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// The running servers (stopped on drop) and what they saw.
pub struct TestHttp {
    shared: Arc<Shared>,
    http: SocketAddr,
    https: SocketAddr,
    stop: CancellationToken,
}

/// Marks a request as reaching the HTTPS listener (an extension the accept loop sets).
#[derive(Clone, Copy)]
struct OverTls(bool);

impl TestHttp {
    /// Both servers listening on ephemeral loopback ports, on the current tokio runtime.
    pub async fn start() -> TestHttp {
        let m = material();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![m.leaf_der.clone(), m.ca_der.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(m.key_der.clone())),
            )
            .expect("a TLS server config");
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(tls));

        let shared = Arc::new(Shared::default());
        let stop = CancellationToken::new();
        let http = serve(shared.clone(), None, stop.clone()).await;
        let https = serve(shared.clone(), Some(acceptor), stop.clone()).await;
        TestHttp {
            shared,
            http,
            https,
            stop,
        }
    }

    /// The plain HTTP port.
    pub fn port(&self) -> u16 {
        self.http.port()
    }

    /// The HTTPS port.
    pub fn tls_port(&self) -> u16 {
        self.https.port()
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn http_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port())
    }

    /// `https://127.0.0.1:TLSPORT{path}`.
    pub fn https_url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.tls_port())
    }

    /// The PEM file holding the test CA's certificate (the same for every server).
    pub fn ca_file(&self) -> &'static Path {
        ca_file()
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// How many requests reached either server.
    pub fn count(&self) -> usize {
        self.shared.seen.lock().unwrap().len()
    }

    /// How many requests had a path starting with `prefix`.
    pub fn count_path(&self, prefix: &str) -> usize {
        self.shared
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path.starts_with(prefix))
            .count()
    }

    /// Polls until at least `n` requests arrived; false if `limit` passed first.
    pub async fn wait_for_count(&self, n: usize, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.count() >= n {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every value of header `name` (any case) over all requests.
    pub fn headers_seen(&self, name: &str) -> Vec<String> {
        let name = name.to_ascii_lowercase();
        self.shared
            .seen
            .lock()
            .unwrap()
            .iter()
            .flat_map(|s| s.headers.iter())
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// TCP connections accepted by either server.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// The most requests the servers were handling at once (from arrival until the handler
    /// returned its response headers).
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }
}

impl Drop for TestHttp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The test CA and the leaf it signed, made once per process.
struct Material {
    ca_pem: String,
    ca_der: CertificateDer<'static>,
    leaf_der: CertificateDer<'static>,
    /// The leaf's PKCS#8 key.
    key_der: Vec<u8>,
    /// Holds `ca_pem`; a static, so it lives (and is not deleted) until the process ends.
    file: tempfile::NamedTempFile,
}

fn material() -> &'static Material {
    static M: OnceLock<Material> = OnceLock::new();
    M.get_or_init(certificates)
}

/// The PEM file holding the test CA's certificate.
pub fn ca_file() -> &'static Path {
    material().file.path()
}

/// The test CA's certificate, PEM.
pub fn ca_pem() -> &'static str {
    &material().ca_pem
}

fn certificates() -> Material {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
        SanType,
    };
    let ca_key = KeyPair::generate().expect("a CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.distinguished_name
        .push(DnType::CommonName, "Tasker test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).expect("the CA certificate");
    let issuer = Issuer::new(ca, ca_key);

    let leaf_key = KeyPair::generate().expect("a leaf key");
    let mut leaf =
        CertificateParams::new(TLS_NAMES.map(String::from).to_vec()).expect("leaf params");
    leaf.subject_alt_names
        .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    let leaf_cert = leaf
        .signed_by(&leaf_key, &issuer)
        .expect("the leaf certificate");

    let ca_pem = ca_cert.pem();
    let mut file = tempfile::Builder::new()
        .prefix("tasker-test-ca-")
        .suffix(".pem")
        .tempfile()
        .expect("a temp file for the CA");
    file.write_all(ca_pem.as_bytes()).expect("write the CA");
    file.flush().expect("flush the CA");
    Material {
        ca_pem,
        ca_der: ca_cert.der().clone(),
        leaf_der: leaf_cert.der().clone(),
        key_der: leaf_key.serialize_der(),
        file,
    }
}

/// Listens on a loopback port and serves the routes on every connection, over TLS if
/// `tls` is given, until `stop`.
async fn serve(
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
    stop: CancellationToken,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let addr = listener.local_addr().unwrap();
    let over_tls = tls.is_some();
    let app = routes(shared.clone(), stop.clone()).layer(axum::Extension(OverTls(over_tls)));
    tokio::spawn(async move {
        loop {
            let (tcp, _) = tokio::select! {
                _ = stop.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(_) => continue,
                },
            };
            shared.connections.fetch_add(1, Ordering::SeqCst);
            let app = app.clone();
            let tls = tls.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let svc = TowerToHyperService::new(app);
                let http = hyper::server::conn::http1::Builder::new();
                let served = async {
                    match tls {
                        // A handshake the client gave up on (an unknown CA) is expected.
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(tcp).await {
                                let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                            }
                        }
                        None => {
                            let _ = http.serve_connection(TokioIo::new(tcp), svc).await;
                        }
                    }
                };
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = served => {}
                }
            });
        }
    });
    addr
}

fn routes(shared: Arc<Shared>, stop: CancellationToken) -> Router {
    Router::new()
        .route("/echo", any(echo))
        .route("/echo/{*rest}", any(echo))
        .route("/bytes/{n}", any(bytes))
        .route("/status/{code}", any(status))
        .route("/redirect", any(redirect))
        .route("/drip", any(drip))
        .route("/flaky/{key}", any(flaky))
        .route("/slow-headers", any(slow_headers))
        .fallback(any(echo))
        .layer(middleware::from_fn_with_state(shared.clone(), record))
        .layer(axum::Extension(stop))
        .with_state(shared)
}

/// Records the request and keeps the in-flight count.
async fn record(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let tls = req.extensions().get::<OverTls>().is_some_and(|t| t.0);
    let seen = Seen {
        method: req.method().to_string(),
        path: req.uri().path().to_owned(),
        query: req.uri().query().map(str::to_owned),
        headers: req
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        tls,
        at: Instant::now(),
    };
    shared.seen.lock().unwrap().push(seen);
    let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let res = next.run(req).await;
    shared.in_flight.fetch_sub(1, Ordering::SeqCst);
    res
}

async fn echo(method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Json<Value> {
    let mut h = serde_json::Map::new();
    for (n, v) in &headers {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        match h.get_mut(n.as_str()) {
            Some(Value::String(prev)) => {
                prev.push_str(", ");
                prev.push_str(&v);
            }
            _ => {
                h.insert(n.as_str().to_owned(), Value::String(v));
            }
        }
    }
    Json(json!({
        "method": method.as_str(),
        "path": uri.path(),
        "query": uri.query(),
        "headers": h,
        "body": String::from_utf8_lossy(&body),
    }))
}

async fn bytes(UrlPath(n): UrlPath<usize>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/octet-stream")],
        vec![b'x'; n],
    )
        .into_response()
}

async fn status(UrlPath(code): UrlPath<u16>, Query(q): Query<HashMap<String, String>>) -> Response {
    let code = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
    let mut res = (code, format!("status {}", code.as_u16())).into_response();
    if let Some(s) = q.get("retry_after")
        && let Ok(v) = HeaderValue::from_str(s)
    {
        res.headers_mut().insert(header::RETRY_AFTER, v);
    }
    res
}

async fn redirect(Query(q): Query<HashMap<String, String>>) -> Response {
    match q.get("to").and_then(|t| HeaderValue::from_str(t).ok()) {
        Some(to) => (StatusCode::FOUND, [(header::LOCATION, to)], "redirect").into_response(),
        None => (StatusCode::BAD_REQUEST, "?to= is required").into_response(),
    }
}

/// Headers now, then a byte a second until the client goes or the server stops.
async fn drip(axum::Extension(stop): axum::Extension<CancellationToken>) -> Response {
    let body = futures::stream::unfold((stop, true), |(stop, first)| async move {
        if !first {
            tokio::select! {
                _ = stop.cancelled() => return None,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
        Some((Ok::<_, Infallible>(Bytes::from_static(b".")), (stop, false)))
    });
    (
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Body::from_stream(body),
    )
        .into_response()
}

async fn flaky(
    State(shared): State<Arc<Shared>>,
    UrlPath(key): UrlPath<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let fail: u32 = q.get("fail").and_then(|f| f.parse().ok()).unwrap_or(1);
    let retry_after = q.get("retry_after").map_or("1", String::as_str);
    let call = {
        let mut calls = shared.flaky.lock().unwrap();
        let n = calls.entry(key).or_default();
        *n += 1;
        *n
    };
    if call <= fail {
        let mut res = (StatusCode::TOO_MANY_REQUESTS, "slow down").into_response();
        if let Ok(v) = HeaderValue::from_str(retry_after) {
            res.headers_mut().insert(header::RETRY_AFTER, v);
        }
        res
    } else {
        Json(json!({"call": call})).into_response()
    }
}

async fn slow_headers(Query(q): Query<HashMap<String, String>>) -> &'static str {
    let ms: u64 = q.get("ms").and_then(|m| m.parse().ok()).unwrap_or(1000);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    "slow"
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn plain_http_get_is_echoed_and_recorded() {
        let s = TestHttp::start().await;
        let res = reqwest::Client::new()
            .post(s.http_url("/echo?a=1"))
            .header("x-probe", "one")
            .body("hello")
            .send()
            .await
            .expect("the server answers");
        assert_eq!(res.status(), 200);
        let v: Value = res.json().await.unwrap();
        assert_eq!(v["method"], "POST");
        assert_eq!(v["path"], "/echo");
        assert_eq!(v["query"], "a=1");
        assert_eq!(v["body"], "hello");
        assert_eq!(v["headers"]["x-probe"], "one");
        assert_eq!(s.count(), 1);
        assert_eq!(s.count_path("/echo"), 1);
        assert_eq!(s.headers_seen("X-Probe"), vec!["one".to_owned()]);
        assert_eq!(s.connections(), 1);
        assert!(!s.requests()[0].tls);

        let flaky = reqwest::Client::new();
        let url = s.http_url("/flaky/k?fail=1&retry_after=3");
        let first = flaky.get(&url).send().await.unwrap();
        assert_eq!(first.status(), 429);
        assert_eq!(first.headers()["retry-after"], "3");
        assert_eq!(flaky.get(&url).send().await.unwrap().status(), 200);
        let n = flaky.get(s.http_url("/bytes/1000")).send().await.unwrap();
        assert_eq!(n.bytes().await.unwrap().len(), 1000);
        assert!(s.wait_for_count(4, Duration::from_secs(5)).await);
    }

    /// A GET by hand over TLS: trusting the test CA it works, for a name and for the IP;
    /// without it the handshake fails.
    #[tokio::test]
    async fn https_works_with_the_test_ca_only() {
        let s = TestHttp::start().await;
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(s.ca_file()).unwrap();
        for c in rustls_pki_types::pem::PemObject::pem_slice_iter(&pem) {
            let c: CertificateDer<'static> = c.unwrap();
            roots.add(c).unwrap();
        }
        for name in ["localhost", "127.0.0.1", "api.tasker.test"] {
            let answer = get_over_tls(&s, roots.clone(), name)
                .await
                .expect("TLS works");
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
            assert!(answer.contains("\"path\":\"/echo\""), "{answer}");
        }
        assert!(s.requests().iter().all(|r| r.tls));
        let untrusted = get_over_tls(&s, rustls::RootCertStore::empty(), "localhost").await;
        assert!(untrusted.is_err(), "no CA, no connection: {untrusted:?}");
    }

    async fn get_over_tls(
        s: &TestHttp,
        roots: rustls::RootCertStore,
        name: &str,
    ) -> std::io::Result<String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", s.tls_port())).await?;
        let server = rustls_pki_types::ServerName::try_from(name.to_owned()).unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(server, tcp)
            .await?;
        tls.write_all(
            format!("GET /echo HTTP/1.1\r\nhost: {name}\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut out = Vec::new();
        tls.read_to_end(&mut out).await?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}
