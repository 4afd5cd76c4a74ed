//! Request decoding: size limit, "must be a JSON object", then the typed body.

use serde::de::DeserializeOwned;
use shop_contracts::{ErrorDetail, MAX_BODY_BYTES};

/// Decodes a request body, or says exactly what is wrong with it as a `bad_request`.
///
/// The object check matters: serde would accept a JSON array for a struct (by position),
/// and the contract says bodies are objects.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, ErrorDetail> {
    if body.len() > MAX_BODY_BYTES {
        return Err(
            ErrorDetail::bad_request("request body is larger than 64 KiB")
                .with("limit_bytes", MAX_BODY_BYTES),
        );
    }
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        // Distinguish "not JSON at all" from "JSON, but not an object" for a clearer message.
        return Err(match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(_) => ErrorDetail::bad_request("request body must be a JSON object"),
            Err(_) => ErrorDetail::bad_request("request body is not valid JSON"),
        });
    }
    serde_json::from_slice(body).map_err(|e| {
        let message = match e.classify() {
            serde_json::error::Category::Data => format!("invalid request: {e}"),
            _ => "request body is not valid JSON".to_owned(),
        };
        ErrorDetail::bad_request(message)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use shop_contracts::goods::GoodsDetailRequest;
    use shop_contracts::ErrorCode;

    fn check(body: &[u8], expect: &str) {
        let err = decode::<GoodsDetailRequest>(body).unwrap_err();
        assert_eq!(err.code, ErrorCode::BadRequest);
        assert!(
            err.message.contains(expect),
            "{:?} gave {:?}",
            String::from_utf8_lossy(body),
            err.message
        );
    }

    #[test]
    fn rejects_each_bad_input_class() {
        check(b"not json", "not valid JSON");
        check(b"[1]", "JSON object");
        check(b"{\"goods_id\":1", "not valid JSON");
        check(b"{}", "missing field `goods_id`");
        check(b"{\"goods_id\":\"1\"}", "invalid type");
        check(b"{\"goods_id\":0}", "positive integer");
        check(&vec![b' '; MAX_BODY_BYTES + 1], "64 KiB");
    }

    #[test]
    fn ignores_unknown_fields() {
        let ok: GoodsDetailRequest = decode(b" {\"goods_id\":7,\"extra\":[1,2]}").unwrap();
        assert_eq!(ok.goods_id.get(), 7);
    }
}
