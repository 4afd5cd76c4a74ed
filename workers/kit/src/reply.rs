//! Replies: a success body, or a contract error with both error headers and the error body.

use async_nats::{Client, HeaderMap, Message};
use serde::Serialize;
use shop_contracts::error::{HEADER_ERROR, HEADER_ERROR_CODE};
use shop_contracts::{ErrorBody, ErrorDetail};

/// Sends `result` as the reply to `request` over `client` (the connection that received it:
/// the server lets a worker answer only requests delivered to that connection). A request
/// without a reply subject gets none. Publishing errors are logged: the caller has nobody
/// left to tell, and the requester will time out and may retry.
pub async fn respond<T: Serialize>(
    client: &Client,
    request: &Message,
    result: Result<T, ErrorDetail>,
) {
    let Some(reply) = request.reply.clone() else {
        return;
    };
    let sent = match result.and_then(|value| encode(&value)) {
        Ok(body) => client.publish(reply, body.into()).await,
        Err(error) => {
            let (headers, body) = error_reply(error);
            client
                .publish_with_headers(reply, headers, body.into())
                .await
        }
    };
    if let Err(error) = sent {
        tracing::warn!(%error, "could not send a reply");
    }
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, ErrorDetail> {
    serde_json::to_vec(value).map_err(|error| {
        tracing::error!(%error, "could not encode a reply");
        ErrorDetail::internal()
    })
}

/// The headers and body of an error reply.
pub fn error_reply(error: ErrorDetail) -> (HeaderMap, Vec<u8>) {
    let mut headers = HeaderMap::new();
    // Header values cannot hold line breaks; messages are ours, but be safe.
    let message: String = error
        .message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    headers.insert(HEADER_ERROR, message.as_str());
    headers.insert(HEADER_ERROR_CODE, error.code.status().to_string().as_str());
    let body = serde_json::to_vec(&ErrorBody { error }).unwrap_or_else(|_| b"{}".to_vec());
    (headers, body)
}
