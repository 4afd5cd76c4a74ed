//! Snowflake order_sns: 41 bits of milliseconds since [`EPOCH_MS`], 10 bits of node id, 12
//! bits of sequence. The node id is leased from KV bucket `order_nodes` (create-if-absent,
//! renewed well inside the bucket's max age), so no two running workers share one; a worker
//! whose lease is not renewed in time stops issuing ids (`unavailable`) until it holds one.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, kv};
use shop_contracts::OrderSn;

/// 2024-01-01T00:00:00Z: 41 bits of milliseconds last until 2093.
pub const EPOCH_MS: i64 = 1_704_067_200_000;
pub const NODE_BITS: u32 = 10;
pub const SEQ_BITS: u32 = 12;
pub const MAX_NODE: u16 = (1 << NODE_BITS) - 1;
const MAX_SEQ: u16 = (1 << SEQ_BITS) - 1;
pub const BUCKET: &str = "order_nodes";

/// The pure generator: never issues the same id twice for one node, even when the clock
/// steps backwards (it keeps using its last millisecond, borrowing the next one when the
/// sequence runs out, instead of waiting for the clock to catch up).
#[derive(Debug, Clone, Default)]
pub struct Snowflake {
    last_ms: i64,
    seq: u16,
}

impl Snowflake {
    pub fn next(&mut self, node: u16, now_ms: i64) -> i64 {
        let now = now_ms - EPOCH_MS;
        if now > self.last_ms {
            self.last_ms = now;
            self.seq = 0;
        } else if self.seq < MAX_SEQ {
            self.seq += 1;
        } else {
            // Sequence exhausted in this millisecond (or the clock is behind): borrow the
            // next millisecond. The clock catches up; ids stay unique and increasing.
            self.last_ms += 1;
            self.seq = 0;
        }
        (self.last_ms << (NODE_BITS + SEQ_BITS))
            | (i64::from(node) << SEQ_BITS)
            | i64::from(self.seq)
    }
}

/// Node id of an order_sn (for tests and logs).
pub fn node_of(sn: i64) -> u16 {
    ((sn >> SEQ_BITS) & i64::from(MAX_NODE)) as u16
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[derive(Debug)]
struct Lease {
    node: u16,
    revision: u64,
    valid_until: Instant,
}

#[derive(Debug, Default)]
struct State {
    gen: Snowflake,
    lease: Option<Lease>,
}

/// Issues order_sns while this worker holds a node-id lease.
#[derive(Debug, Clone)]
pub struct Ids {
    state: Arc<Mutex<State>>,
}

impl Ids {
    /// `None` when no valid lease is held.
    pub fn next(&self) -> Option<OrderSn> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let node = match &state.lease {
            Some(lease) if Instant::now() < lease.valid_until => lease.node,
            _ => return None,
        };
        let id = state.gen.next(node, now_ms());
        OrderSn::new(id).ok()
    }

    pub fn node(&self) -> Option<u16> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.lease.as_ref().map(|l| l.node)
    }

    /// Leases a node id (waiting until one is free) and keeps renewing it in a task.
    pub async fn start(js: &jetstream::Context, ttl: Duration) -> Result<Ids, async_nats::Error> {
        let store = match js.get_key_value(BUCKET).await {
            Ok(store) => store,
            Err(_) => {
                js.create_key_value(kv::Config {
                    bucket: BUCKET.into(),
                    description: "snowflake node-id leases of order workers".into(),
                    history: 1,
                    max_age: ttl,
                    storage: jetstream::stream::StorageType::File,
                    ..Default::default()
                })
                .await?
            }
        };
        let ids = Ids {
            state: Arc::new(Mutex::new(State::default())),
        };
        let token = format!("{}-{}", std::process::id(), now_ms());
        acquire(&store, &ids, &token, ttl).await;
        let renewing = ids.clone();
        tokio::spawn(async move { renew_forever(store, renewing, token, ttl).await });
        Ok(ids)
    }
}

/// Tries node ids from a random start until one is created; retries until it succeeds.
async fn acquire(store: &kv::Store, ids: &Ids, token: &str, ttl: Duration) {
    let start = (now_ms() as u64 ^ u64::from(std::process::id())) as u16 % (MAX_NODE + 1);
    loop {
        for i in 0..=MAX_NODE {
            let node = (start + i) % (MAX_NODE + 1);
            let sent = Instant::now();
            if let Ok(revision) = store
                .create(node.to_string(), token.to_owned().into())
                .await
            {
                let mut state = ids.state.lock().unwrap_or_else(|e| e.into_inner());
                state.lease = Some(Lease {
                    node,
                    revision,
                    valid_until: sent + ttl * 2 / 3,
                });
                tracing::info!(node, "leased a snowflake node id");
                return;
            }
        }
        tracing::warn!("no free snowflake node id; retrying");
        tokio::time::sleep(ttl / 4).await;
    }
}

async fn renew_forever(store: kv::Store, ids: Ids, token: String, ttl: Duration) {
    loop {
        tokio::time::sleep(ttl / 6).await;
        let current = {
            let state = ids.state.lock().unwrap_or_else(|e| e.into_inner());
            state.lease.as_ref().map(|l| (l.node, l.revision))
        };
        let Some((node, revision)) = current else {
            acquire(&store, &ids, &token, ttl).await;
            continue;
        };
        let sent = Instant::now();
        match store
            .update(node.to_string(), token.clone().into(), revision)
            .await
        {
            Ok(revision) => {
                let mut state = ids.state.lock().unwrap_or_else(|e| e.into_inner());
                state.lease = Some(Lease {
                    node,
                    revision,
                    valid_until: sent + ttl * 2 / 3,
                });
            }
            Err(error) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                // Someone else holds it now (ours expired): stop issuing, lease another.
                tracing::warn!(node, %error, "lost the snowflake node lease");
                ids.state.lock().unwrap_or_else(|e| e.into_inner()).lease = None;
            }
            Err(error) => {
                // Unknown outcome (NATS down): keep the old lease until it runs out.
                tracing::warn!(node, %error, "could not renew the snowflake node lease");
                let expired = {
                    let state = ids.state.lock().unwrap_or_else(|e| e.into_inner());
                    state
                        .lease
                        .as_ref()
                        .is_some_and(|l| Instant::now() >= l.valid_until)
                };
                if expired {
                    ids.state.lock().unwrap_or_else(|e| e.into_inner()).lease = None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = EPOCH_MS + 1_000_000;

    #[test]
    fn ids_increase_and_carry_the_node() {
        let mut gen = Snowflake::default();
        let mut last = 0;
        for i in 0..10_000 {
            let id = gen.next(7, T + i / 100);
            assert!(id > last, "{id} after {last}");
            assert_eq!(node_of(id), 7);
            last = id;
        }
    }

    #[test]
    fn backward_clock_never_repeats() {
        let mut gen = Snowflake::default();
        let mut seen = std::collections::HashSet::new();
        let mut last = 0;
        // Forward, then the clock steps back 5 s and stays there for many ids.
        let times = (0..100)
            .map(|i| T + i)
            .chain((0..20_000).map(|_| T - 5_000));
        for now in times {
            let id = gen.next(3, now);
            assert!(id > last);
            assert!(seen.insert(id));
            last = id;
        }
        // The clock catches up again: still increasing.
        let id = gen.next(3, T + 10_000);
        assert!(id > last);
    }

    #[test]
    fn sequence_overflow_borrows_the_next_millisecond() {
        let mut gen = Snowflake::default();
        let ids: Vec<i64> = (0..5000).map(|_| gen.next(1, T)).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
    }
}
