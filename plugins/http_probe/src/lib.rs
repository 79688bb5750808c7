//! Makes HTTP requests as its config says, for the HTTP tests and the benchmark.
//!
//! Config: `{"method":"GET","url":"http://127.0.0.1:PORT/echo","headers":{"x-a":"b"},
//! "body":"text","body_bytes":N,"repeat":1,"parallel":1,"follow_redirects":0,
//! "check_status":false,"timeout_ms":null,"keep_going":false}`. `repeat` rounds one after
//! another, each of `parallel` requests in flight at once; `follow_redirects` follows up to
//! that many 3xx `Location`s per request (each a new request the host checks);
//! `check_status` maps 4xx/5xx with the SDK's `error_for_status`; `keep_going` collects
//! errors instead of failing on the first. `"finish_after_response": true` instead sends
//! one request through the raw bindings, writing its body but flushing and finishing it only
//! once the response has arrived (as a guest on a busy host may); output `{"status",
//! "finish"}`, where `finish` is what flushing and finishing gave.
//!
//! Output: `{"status", "statuses" (one per request, after redirects), "bytes" (response
//! bodies, redirects included), "body" (first 4096 chars of the last body), "headers" (of
//! the last response), "redirects" (URLs followed), "errors"}`.
use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use tasker_guest_sdk::http::{self, ErrorKind, HttpError, Request, Response};
use tasker_guest_sdk::{Context, Handler, StepError, Value, export_handler, json};

#[derive(Deserialize)]
struct Config {
    #[serde(default = "get")]
    method: String,
    url: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    body_bytes: Option<usize>,
    #[serde(default = "one")]
    repeat: u32,
    #[serde(default = "one")]
    parallel: u32,
    #[serde(default)]
    follow_redirects: u32,
    #[serde(default)]
    check_status: bool,
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    keep_going: bool,
    #[serde(default)]
    finish_after_response: bool,
}

fn get() -> String {
    "GET".into()
}

fn one() -> u32 {
    1
}

impl Config {
    fn body(&self) -> Option<Vec<u8>> {
        match (&self.body, self.body_bytes) {
            (Some(text), _) => Some(text.clone().into_bytes()),
            (None, Some(n)) => Some(vec![b'x'; n]),
            (None, None) => None,
        }
    }

    fn request(&self, method: &str, url: &str, body: Option<Vec<u8>>) -> Request {
        let mut req = http::request(method, url);
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        if let Some(body) = body {
            req = req.body(body);
        }
        if let Some(ms) = self.timeout_ms {
            req = req.timeout(Duration::from_millis(ms));
        }
        req
    }
}

/// What the requests brought back, across rounds.
#[derive(Default)]
struct Tally {
    statuses: Vec<u16>,
    bytes: u64,
    redirects: Vec<String>,
    errors: Vec<String>,
    last: Option<Response>,
}

/// Where a `Location` points, from the URL that answered with it.
fn resolve(base: &str, location: &str) -> String {
    if location.contains("://") {
        return location.to_string();
    }
    let (scheme, rest) = base.split_once("://").unwrap_or(("http", base));
    if let Some(rest) = location.strip_prefix("//") {
        return format!("{scheme}://{rest}");
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if location.starts_with('/') {
        return format!("{scheme}://{authority}{location}");
    }
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
    format!("{scheme}://{authority}{dir}/{location}")
}

/// Follow up to `cfg.follow_redirects` redirects from `first`.
fn follow(
    cfg: &Config,
    first: Result<Response, HttpError>,
    tally: &mut Tally,
) -> Result<Response, HttpError> {
    let mut resp = first?;
    let mut method = cfg.method.clone();
    let mut body = cfg.body();
    for _ in 0..cfg.follow_redirects {
        let status = resp.status();
        let Some(location) = resp
            .header("location")
            .filter(|_| (300..400).contains(&status))
        else {
            break;
        };
        let target = resolve(resp.url(), location);
        // Like browsers: 303 (and 301/302 after a POST) turn into a GET without a body.
        if status == 303 || (matches!(status, 301 | 302) && method == "POST") {
            method = "GET".into();
            body = None;
        }
        tally.bytes += resp.body().len() as u64;
        tally.redirects.push(target.clone());
        resp = cfg.request(&method, &target, body.clone()).send()?;
    }
    if cfg.check_status {
        resp = resp.error_for_status()?;
    }
    Ok(resp)
}

/// A transport failure is retryable (the host classifies refusals itself); a status mapped
/// by `check_status` keeps the SDK's mapping.
fn step_error(e: HttpError) -> StepError {
    match e.kind {
        ErrorKind::Transport(_) => StepError::retryable(e.to_string()),
        _ => e.into(),
    }
}

struct HttpProbe;

impl Handler for HttpProbe {
    fn handle(ctx: Context) -> Result<impl serde::Serialize, StepError> {
        let cfg: Config = ctx.config_as()?;
        if cfg.finish_after_response {
            return finish_after_response(&cfg);
        }
        let mut tally = Tally::default();
        for _ in 0..cfg.repeat {
            let batch = (0..cfg.parallel.max(1))
                .map(|_| cfg.request(&cfg.method, &cfg.url, cfg.body()))
                .collect();
            for result in http::send_all(batch) {
                match follow(&cfg, result, &mut tally) {
                    Ok(resp) => {
                        tally.statuses.push(resp.status());
                        tally.bytes += resp.body().len() as u64;
                        tally.last = Some(resp);
                    }
                    Err(e) if cfg.keep_going => tally.errors.push(e.to_string()),
                    Err(e) => return Err(step_error(e)),
                }
            }
        }
        let (body, headers) = match &tally.last {
            Some(resp) => {
                let mut headers: BTreeMap<String, String> = BTreeMap::new();
                for (k, v) in resp.headers() {
                    headers
                        .entry(k.to_ascii_lowercase())
                        .and_modify(|all| {
                            all.push_str(", ");
                            all.push_str(v);
                        })
                        .or_insert_with(|| v.clone());
                }
                (resp.text().chars().take(4096).collect::<String>(), headers)
            }
            None => (String::new(), BTreeMap::new()),
        };
        Ok(json!({
            "status": tally.last.as_ref().map_or(Value::Null, |r| json!(r.status())),
            "statuses": tally.statuses,
            "bytes": tally.bytes,
            "body": body,
            "headers": headers,
            "redirects": tally.redirects,
            "errors": tally.errors,
        }))
    }
}

/// A POST whose body is written at once but flushed and finished only after the response:
/// by then the host has sent every declared byte.
fn finish_after_response(cfg: &Config) -> Result<Value, StepError> {
    use tasker_guest_sdk::bindings::wasi::http::outgoing_handler;
    use tasker_guest_sdk::bindings::wasi::http::types::{
        Fields, Method, OutgoingBody, OutgoingRequest, Scheme,
    };
    let fail = |what: &str, e: &dyn std::fmt::Debug| StepError::permanent(format!("{what}: {e:?}"));
    let body = cfg.body().unwrap_or_default();
    let rest = cfg
        .url
        .strip_prefix("http://")
        .ok_or_else(|| fail("url", &cfg.url))?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let length = body.len().to_string().into_bytes();
    let fields =
        Fields::from_list(&[("content-length".into(), length)]).map_err(|e| fail("headers", &e))?;
    let request = OutgoingRequest::new(fields);
    let _ = request.set_method(&Method::Post);
    let _ = request.set_scheme(Some(&Scheme::Http));
    let _ = request.set_authority(Some(authority));
    let _ = request.set_path_with_query(Some(path));
    let out = request.body().map_err(|e| fail("body", &e))?;
    let future = outgoing_handler::handle(request, None).map_err(|e| fail("handle", &e))?;
    let stream = out.write().map_err(|e| fail("write", &e))?;
    let mut rest = &body[..];
    while !rest.is_empty() {
        stream.subscribe().block();
        let permit = stream.check_write().map_err(|e| fail("check_write", &e))?;
        let n = rest
            .len()
            .min(usize::try_from(permit).unwrap_or(usize::MAX));
        stream.write(&rest[..n]).map_err(|e| fail("write", &e))?;
        rest = &rest[n..];
    }
    future.subscribe().block();
    let response = match future.get() {
        Some(Ok(Ok(r))) => r,
        other => return Err(fail("response", &other)),
    };
    let flushed = stream.flush().and_then(|()| stream.check_write().map(drop));
    drop(stream);
    let finish = match (flushed, OutgoingBody::finish(out, None)) {
        (Ok(()), Ok(())) => "ok".to_string(),
        (Err(e), _) => format!("flush: {e:?}"),
        (_, Err(e)) => format!("finish: {e:?}"),
    };
    Ok(json!({ "status": response.status(), "finish": finish }))
}

export_handler!(HttpProbe);
