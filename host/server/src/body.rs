//! Request bodies: JSON read strictly (unknown fields refused by the types, errors naming the
//! field as a JSON pointer), within the size limit, answered as problems.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use crate::problem::{Problem, pointer_of};

/// A JSON body of `T`, or a problem naming what is wrong with it.
pub struct StrictJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for StrictJson<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        if let Some(ct) = req.headers().get(header::CONTENT_TYPE)
            && !is_json(ct.to_str().unwrap_or(""))
        {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                format!(
                    "the body must be application/json, not {}",
                    ct.to_str().unwrap_or("?")
                ),
            ));
        }
        let bytes = body_bytes(req, state).await?;
        parse(&bytes).map(StrictJson)
    }
}

/// The raw body within the limit, or a 413 problem saying the limit.
pub async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, Problem> {
    Bytes::from_request(req, state)
        .await
        .map_err(|e| body_rejection(&e))
}

fn body_rejection(e: &BytesRejection) -> Problem {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            "the body is larger than this server accepts (see the server's --max-body setting)",
        )
    } else {
        Problem::bad_request(format!("cannot read the body: {e}"))
    }
}

pub(crate) fn is_json(content_type: &str) -> bool {
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || mime.ends_with("+json")
}

/// Deserializes `bytes` as `T`, naming the field at fault.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = match serde_path_to_error::deserialize(&mut de) {
        Ok(v) => v,
        Err(e) => {
            let mut pointer = pointer_of(&e.path().to_string());
            let inner = e.into_inner();
            if inner.is_syntax() || inner.is_eof() {
                return Err(Problem::bad_request(format!(
                    "the body is not valid JSON: {inner}"
                )));
            }
            let msg = inner.to_string();
            // An unknown field fails on its key, before the path names it.
            if let Some(name) = msg
                .strip_prefix("unknown field `")
                .and_then(|r| r.split('`').next())
                && !pointer.ends_with(&format!("/{name}"))
            {
                pointer = format!("{pointer}/{name}");
            }
            let at = if pointer.is_empty() {
                "the body"
            } else {
                &pointer
            };
            return Err(
                Problem::bad_request(format!("{at}: {msg}")).field(pointer.clone(), msg.clone())
            );
        }
    };
    de.end()
        .map_err(|e| Problem::bad_request(format!("the body is not valid JSON: {e}")))?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Req {
        name: String,
        #[serde(default)]
        tags: Vec<String>,
        inner: Option<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        n: u32,
    }

    #[test]
    fn bad_bodies_name_the_field() {
        let e = parse::<Req>(br#"{"name": "a", "tags": ["x", 3]}"#).unwrap_err();
        assert_eq!(e.errors[0].pointer, "/tags/1", "{e:?}");
        let e = parse::<Req>(br#"{"name": "a", "extra": 1}"#).unwrap_err();
        assert_eq!(e.errors[0].pointer, "/extra", "{e:?}");
        assert!(e.errors[0].detail.contains("unknown field"), "{e:?}");
        let e = parse::<Req>(br#"{"name": "a", "inner": {"n": -1}}"#).unwrap_err();
        assert_eq!(e.errors[0].pointer, "/inner/n", "{e:?}");
        let e = parse::<Req>(br#"{"tags": []}"#).unwrap_err();
        assert!(e.detail.contains("missing field `name`"), "{e:?}");
        let e = parse::<Req>(br#"{"name": "a""#).unwrap_err();
        assert!(e.detail.contains("not valid JSON"), "{e:?}");
        let e = parse::<Req>(br#"{"name": "a"} x"#).unwrap_err();
        assert!(e.detail.contains("not valid JSON"), "{e:?}");
        assert_eq!(parse::<Req>(br#"{"name": "a"}"#).unwrap().name, "a");
    }
}
