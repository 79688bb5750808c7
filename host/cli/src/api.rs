//! The commands' HTTP client, for `--server URL`: the same operations through a `tasker
//! serve` instead of the database. Problems come back as errors naming their fields.

use anyhow::{Context, Result, anyhow};
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// A `tasker serve` to talk to.
#[derive(Debug, Clone)]
pub struct Api {
    base: String,
    token: Option<String>,
    /// Sent as the `traceparent` header (the parent of a task created through the API).
    traceparent: Option<String>,
    http: reqwest::Client,
}

/// A request body.
pub enum Body {
    Json(Value),
    Yaml(String),
    Wasm(Vec<u8>),
}

impl Api {
    pub fn new(base: &str, token: Option<String>) -> Result<Api> {
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            anyhow::bail!("--server {base} is not an http:// or https:// URL");
        }
        Ok(Api {
            base,
            token,
            traceparent: None,
            http: reqwest::Client::new(),
        })
    }

    pub fn with_traceparent(mut self, tp: Option<String>) -> Api {
        self.traceparent = tp;
        self
    }

    /// `GET path`: the JSON body of a 2xx answer.
    pub async fn get(&self, path: &str) -> Result<Value> {
        Ok(self.call(Method::GET, path, None).await?.1)
    }

    /// `POST path`: status and JSON body of a 2xx answer.
    pub async fn post(&self, path: &str, body: Option<Body>) -> Result<(StatusCode, Value)> {
        self.call(Method::POST, path, body).await
    }

    pub async fn delete(&self, path: &str) -> Result<(StatusCode, Value)> {
        self.call(Method::DELETE, path, None).await
    }

    /// `GET path` as a server-sent event stream.
    pub async fn events(&self, path: &str) -> Result<EventStream> {
        let mut req = self
            .http
            .get(format!("{}{path}", self.base))
            .header("accept", "text/event-stream");
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let res = req
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {}", self.base))?;
        let status = res.status();
        if !status.is_success() {
            let body: Value = res.json().await.unwrap_or(Value::Null);
            return Err(problem_error(status, &body, &Method::GET, path));
        }
        Ok(EventStream {
            res,
            buf: Vec::new(),
        })
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Body>,
    ) -> Result<(StatusCode, Value)> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(tp) = &self.traceparent {
            req = req.header("traceparent", tp);
        }
        match body {
            Some(Body::Json(v)) => req = req.json(&v),
            Some(Body::Yaml(y)) => req = req.header("content-type", "application/yaml").body(y),
            Some(Body::Wasm(w)) => req = req.header("content-type", "application/wasm").body(w),
            None => {}
        }
        let res = req
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {}", self.base))?;
        let status = res.status();
        let bytes = res
            .bytes()
            .await
            .with_context(|| format!("the answer of {method} {path} broke off"))?;
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_success() {
            Ok((status, body))
        } else {
            Err(problem_error(status, &body, &method, path))
        }
    }
}

/// The events of a `text/event-stream` answer, in order.
pub struct EventStream {
    res: reqwest::Response,
    buf: Vec<u8>,
}

impl EventStream {
    /// The next event's id and JSON data; `None` once the server ended the stream.
    /// Comments (keep-alives) are skipped.
    pub async fn next(&mut self) -> Result<Option<(String, Value)>> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buf.drain(..end + 2).collect();
                let block = String::from_utf8_lossy(&block);
                let (mut id, mut data) = (String::new(), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim_start().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        if !data.is_empty() {
                            data.push('\n');
                        }
                        data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                if data.is_empty() {
                    continue;
                }
                let data = serde_json::from_str(&data).context("an event that is not JSON")?;
                return Ok(Some((id, data)));
            }
            match self
                .res
                .chunk()
                .await
                .context("the event stream broke off")?
            {
                Some(c) => self.buf.extend_from_slice(&c),
                None => return Ok(None),
            }
        }
    }
}

/// A problem answer in words: its detail, each field at fault, what is available.
fn problem_error(status: StatusCode, p: &Value, method: &Method, path: &str) -> anyhow::Error {
    let detail = p["detail"].as_str().unwrap_or("no detail");
    let mut msg = format!("the server refused {method} {path} ({status}): {detail}");
    for e in p["errors"].as_array().into_iter().flatten() {
        msg.push_str(&format!(
            "\n  - {}: {}",
            e["pointer"].as_str().unwrap_or("?"),
            e["detail"].as_str().unwrap_or("?")
        ));
    }
    if let Some(a) = p["available"].as_array() {
        let names: Vec<&str> = a.iter().filter_map(Value::as_str).collect();
        msg.push_str(&format!("\n  available: {}", names.join(", ")));
    }
    if status == StatusCode::UNAUTHORIZED {
        msg.push_str("\n  (give a token with --token or TASKER_TOKEN)");
    }
    anyhow!(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn problems_read_as_sentences_with_their_fields() {
        let p = json!({"detail": "bad context", "errors": [{"pointer": "/context/x", "detail": "is required"}], "available": ["echo@0.1.0"]});
        let e = problem_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            &p,
            &Method::POST,
            "/v1/tasks",
        );
        let s = e.to_string();
        assert!(
            s.contains("POST /v1/tasks (422 Unprocessable Entity): bad context"),
            "{s}"
        );
        assert!(
            s.contains("- /context/x: is required") && s.contains("available: echo@0.1.0"),
            "{s}"
        );
        assert!(Api::new("localhost:7300", None).is_err());
    }
}
