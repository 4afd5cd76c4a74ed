//! A request over NATS as a bench [`Operation`]: the body of request `n` comes from a
//! function, the reply is classified by [`Outcome::of_call`].

use std::time::Duration;

use serde_json::Value;
use shop_kit::client::call;

use super::drive::Operation;
use super::outcome::Outcome;

/// How long one request may take before it counts as a timeout.
pub const TIMEOUT: Duration = Duration::from_secs(10);

pub struct NatsRequest<F> {
    pub client: async_nats::Client,
    pub subject: String,
    pub body: F,
}

impl<F: Fn(u64) -> Value + Send + Sync + 'static> Operation for NatsRequest<F> {
    async fn call(&self, n: u64) -> Outcome {
        let result =
            call::<_, serde::de::IgnoredAny>(&self.client, &self.subject, &(self.body)(n), TIMEOUT)
                .await;
        if let Err(error) = &result {
            tracing::debug!(%error, subject = %self.subject, "request failed");
        }
        Outcome::of_call(result)
    }
}
