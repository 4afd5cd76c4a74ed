//! Request extractors whose rejections are problems: a JSON body (JSON content type, at most
//! 64 KiB, an object that decodes into the contract type), path and query parameters. What
//! passes them is a valid contract value; nothing else reaches a worker.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use crate::problem::{Code, Problem};

/// A JSON object body decoded into `T`.
pub struct Json<T>(pub T);

/// The raw bytes of a JSON body (the payment callback signs them), size and type checked.
pub struct RawJson(pub Bytes);

fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

fn too_large() -> Problem {
    Problem::new(
        Code::PayloadTooLarge,
        "the request body is larger than 64 KiB",
    )
}

impl<S: Send + Sync> FromRequest<S> for RawJson {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Problem> {
        if !is_json(request.headers()) {
            return Err(Problem::new(
                Code::UnsupportedMediaType,
                "Content-Type must be application/json",
            ));
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|e: BytesRejection| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    too_large()
                } else {
                    Problem::bad_request("the request body could not be read")
                }
            })?;
        Ok(RawJson(bytes))
    }
}

/// Decodes a JSON object into `T` with a message that names what is wrong.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let mut value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| Problem::bad_request(format!("the body is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(Problem::bad_request("the body must be a JSON object"));
    }
    whole_numbers(&mut value);
    serde_json::from_value(value).map_err(|e| Problem::bad_request(e.to_string()))
}

/// Writes whole floats (`11673.0`, `1e3`) as integers. The OpenAPI document is JSON Schema,
/// to which `11673.0` is the integer 11673; the contract types take integer literals only
/// (a NATS client's `11673.0` stays a `bad_request`), so the gateway converts before decoding.
/// The contract has no float fields, so no float is lost.
fn whole_numbers(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Number(n) if n.is_f64() => {
            // 2^63 as a float: every whole float below it fits an i64.
            const LIMIT: f64 = 9_223_372_036_854_775_808.0;
            if let Some(f) = n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < LIMIT) {
                *value = Value::from(f as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(whole_numbers),
        Value::Object(fields) => fields.values_mut().for_each(whole_numbers),
        _ => {}
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Problem> {
        let RawJson(bytes) = RawJson::from_request(request, state).await?;
        decode(&bytes).map(Json)
    }
}

/// Path parameters decoded into contract types (`{goods_id}` must be a positive integer...).
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|e| Problem::bad_request(format!("bad path parameter: {}", e.body_text())))
    }
}

/// Query parameters decoded into contract types.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|e| Problem::bad_request(format!("bad query parameter: {}", e.body_text())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_floats_decode_as_integers_and_fractions_do_not() {
        let v: serde_json::Value =
            decode(br#"{"a": 11673.0, "b": [1e3, -0.0], "c": 1.5}"#).unwrap();
        assert_eq!(v, serde_json::json!({"a": 11673, "b": [1000, 0], "c": 1.5}));
        let ok: shop_contracts::stock::OrderLine =
            decode(br#"{"goods_id": 7.0, "quantity": 2e0}"#).unwrap();
        assert_eq!(ok.goods_id.get(), 7);
        assert!(
            decode::<shop_contracts::stock::OrderLine>(br#"{"goods_id": 7.5, "quantity": 2}"#)
                .is_err()
        );
    }
}
