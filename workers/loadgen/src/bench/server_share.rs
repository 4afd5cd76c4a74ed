//! The server's own share of the latency the clients saw: the order workers' histograms of
//! `order.create` (`$SRV.STATS.order`, `data.latency_us`: arrival at the endpoint to the
//! reply, by outcome; `shop_kit::latency`) read right before and right after a run, and their
//! difference summed over every order worker that answered. What the bench saw beyond it was
//! spent on the way: in the bench, in nats-server, in the gateway, waiting for a core.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use serde::Serialize;
use serde_json::Value;

/// The endpoint whose share is read: the public subject the bench and the gateway call.
const ENDPOINT: &str = shop_contracts::subjects::order::CREATE;

/// After the first answer, how long to wait for another worker's before taking what came.
const MORE_ANSWERS: Duration = Duration::from_millis(250);

/// Cumulative bucket counts (upper bound in µs -> count) of each outcome.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    served: BTreeMap<u64, u64>,
    refused: BTreeMap<u64, u64>,
    expired: BTreeMap<u64, u64>,
    held: BTreeMap<u64, u64>,
}

/// Server-side percentiles of one run, in milliseconds (bucket upper bounds: at most ~6%
/// above the true value).
#[derive(Debug, Clone, Serialize)]
pub struct ServerShare {
    /// Creates admitted and handled (their wait for a slot included).
    pub served: Option<Quantiles>,
    /// Refusals: the work each cost, up to its reply's publish or its handover to the
    /// holder, without the deliberate hold.
    pub refused: Option<Quantiles>,
    /// Refusals of creates that waited for a slot and did not get one in time: their wait.
    pub expired: Option<Quantiles>,
    /// Held refusals: arrival to the held reply's publish, the hold included.
    pub held: Option<Quantiles>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Quantiles {
    pub count: u64,
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// Reads every order worker's `order.create` histograms. An old worker without them, or
/// none answering, gives an empty snapshot (the share is then reported as missing).
pub async fn read(client: &async_nats::Client) -> Snapshot {
    let mut snapshot = Snapshot::default();
    let inbox = client.new_inbox();
    let Ok(mut answers) = client.subscribe(inbox.clone()).await else {
        return snapshot;
    };
    if client
        .publish_with_reply("$SRV.STATS.order", inbox, "".into())
        .await
        .is_err()
    {
        return snapshot;
    }
    let mut wait = super::request::TIMEOUT;
    while let Ok(Some(answer)) = tokio::time::timeout(wait, answers.next()).await {
        wait = MORE_ANSWERS;
        let Ok(stats) = serde_json::from_slice::<Value>(&answer.payload) else {
            continue;
        };
        let endpoints = stats["endpoints"].as_array().cloned().unwrap_or_default();
        for endpoint in endpoints.iter().filter(|e| e["subject"] == ENDPOINT) {
            let latency = &endpoint["data"]["latency_us"];
            add(&mut snapshot.served, &latency["served"]);
            add(&mut snapshot.refused, &latency["refused"]);
            add(&mut snapshot.expired, &latency["expired"]);
            add(&mut snapshot.held, &latency["held"]);
        }
    }
    snapshot
}

fn add(into: &mut BTreeMap<u64, u64>, buckets: &Value) {
    for bucket in buckets.as_array().into_iter().flatten() {
        if let (Some(upper), Some(count)) = (bucket[0].as_u64(), bucket[1].as_u64()) {
            *into.entry(upper).or_default() += count;
        }
    }
}

impl ServerShare {
    /// What happened between two snapshots.
    pub fn between(before: &Snapshot, after: &Snapshot) -> ServerShare {
        ServerShare {
            served: Quantiles::between(&before.served, &after.served),
            refused: Quantiles::between(&before.refused, &after.refused),
            expired: Quantiles::between(&before.expired, &after.expired),
            held: Quantiles::between(&before.held, &after.held),
        }
    }

    /// One line for the terminal.
    pub fn summary(&self) -> String {
        let part = |name: &str, q: &Option<Quantiles>| {
            q.as_ref().map(|q| {
                format!(
                    "{name} {} p50 {:.3} / p99 {:.3} / max {:.1} ms",
                    q.count, q.p50, q.p99, q.max
                )
            })
        };
        let parts: Vec<String> = [
            part("served", &self.served),
            part("refused", &self.refused),
            part("expired", &self.expired),
            part("held", &self.held),
        ]
        .into_iter()
        .flatten()
        .collect();
        if parts.is_empty() {
            "no server-side figures (no order worker reported order.create's latency)".to_owned()
        } else {
            parts.join("; ")
        }
    }
}

impl Quantiles {
    fn between(before: &BTreeMap<u64, u64>, after: &BTreeMap<u64, u64>) -> Option<Quantiles> {
        let window: Vec<(u64, u64)> = after
            .iter()
            .map(|(&upper, &count)| {
                (
                    upper,
                    count.saturating_sub(*before.get(&upper).unwrap_or(&0)),
                )
            })
            .filter(|&(_, count)| count > 0)
            .collect();
        let count: u64 = window.iter().map(|(_, c)| c).sum();
        if count == 0 {
            return None;
        }
        let at = |q: f64| {
            let rank = ((q * count as f64).ceil() as u64).max(1);
            let mut seen = 0;
            for &(upper, c) in &window {
                seen += c;
                if seen >= rank {
                    return upper as f64 / 1000.0;
                }
            }
            window
                .last()
                .map_or(0.0, |&(upper, _)| upper as f64 / 1000.0)
        };
        Some(Quantiles {
            count,
            p50: at(0.50),
            p99: at(0.99),
            p999: at(0.999),
            max: at(1.0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_of_a_run_is_the_difference_of_two_readings() {
        let mut before = Snapshot::default();
        add(&mut before.refused, &serde_json::json!([[10, 5], [500, 1]]));
        let mut after = Snapshot::default();
        add(
            &mut after.refused,
            &serde_json::json!([[10, 105], [20, 0], [500, 1], [2000, 1]]),
        );
        let share = ServerShare::between(&before, &after);
        let refused = share.refused.unwrap();
        assert_eq!(refused.count, 101);
        assert_eq!(refused.p50, 0.010);
        assert_eq!(refused.p99, 0.010);
        assert_eq!(refused.max, 2.0);
        assert!(share.served.is_none() && share.held.is_none() && share.expired.is_none());
    }
}
