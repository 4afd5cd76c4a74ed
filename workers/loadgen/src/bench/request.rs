//! A request over NATS as a bench [`Operation`]: the body of request `n` comes from a
//! function, the reply is classified by [`Outcome::of_call`].

use std::time::Duration;

use serde::Serialize;
use shop_contracts::Endpoint;
use shop_kit::client::call;

use super::drive::Operation;
use super::outcome::Outcome;

/// How long one request may take before it counts as a timeout.
pub const TIMEOUT: Duration = Duration::from_secs(10);

pub struct NatsRequest<F> {
    pub client: async_nats::Client,
    /// A contract endpoint's subject ([`NatsRequest::to`]), or one of the bench's own (the
    /// echo ceiling's responder, which is no contract endpoint).
    pub subject: String,
    pub body: F,
}

impl<F> NatsRequest<F> {
    /// Requests to the contract endpoint `E`, the body of request `n` being `body(n)`.
    pub fn to<E: Endpoint>(client: &async_nats::Client, body: F) -> Self
    where
        F: Fn(u64) -> E::Request,
    {
        NatsRequest {
            client: client.clone(),
            subject: E::SUBJECT.to_owned(),
            body,
        }
    }
}

impl<F, B> Operation for NatsRequest<F>
where
    F: Fn(u64) -> B + Send + Sync + 'static,
    B: Serialize + Send + Sync,
{
    async fn call(&self, n: u64) -> Outcome {
        // The reply is skipped, not decoded into the endpoint's reply type: the bench only
        // classifies outcomes, and decoding an order per request would be load-generator CPU
        // that no figure needs.
        let result =
            call::<_, serde::de::IgnoredAny>(&self.client, &self.subject, &(self.body)(n), TIMEOUT)
                .await;
        if let Err(error) = &result {
            tracing::debug!(%error, subject = %self.subject, "request failed");
        }
        Outcome::of_call(result)
    }
}
