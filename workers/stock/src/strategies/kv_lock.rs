//! `kv_lock`: a per-goods mutex in the NATS KV bucket `stock_locks`, the analogue of a
//! Redis/redsync lock. `create` succeeds only when the key is absent; the bucket's `max_age`
//! is the lock TTL, so a holder that crashed frees its goods after at most that long.
//!
//! A lock that expires under a slow holder would let two holders in; the write is therefore
//! fenced on the row's `version` (as in [`super::optimistic`]), so an expired lock costs a
//! retry, never an oversell.

use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{self, CreateErrorKind};
use shop_contracts::stock::NormalizedLines;
use sqlx::PgConnection;

use super::Attempt;
use crate::{StockError, LOCK_BUCKET};

#[derive(Clone)]
pub struct Locks {
    kv: kv::Store,
    wait: Duration,
}

/// Locks held by one deduct; [`Held::release`] gives them back.
pub struct Held {
    kv: kv::Store,
    keys: Vec<(String, u64)>,
}

fn key(goods_id: i64) -> String {
    format!("goods.{goods_id}")
}

impl Locks {
    /// Creates the bucket (in memory: a lock need not survive a server restart, the version
    /// fence keeps the counts safe) or opens it when it exists already.
    pub async fn open(
        js: &async_nats::jetstream::Context,
        ttl: Duration,
        wait: Duration,
        replicas: usize,
    ) -> Result<Locks, async_nats::Error> {
        let config = kv::Config {
            bucket: LOCK_BUCKET.into(),
            description: "stock kv_lock strategy: one key per goods while a deduct holds it".into(),
            history: 1,
            max_age: ttl,
            storage: async_nats::jetstream::stream::StorageType::Memory,
            num_replicas: replicas,
            ..Default::default()
        };
        // One that exists (with another worker's TTL, say) is used as it is.
        let kv = shop_kit::jetstream::ensure_bucket(js, config).await?;
        Ok(Locks { kv, wait })
    }

    /// Takes the lock of every goods in `lines`, in ascending goods_id order (so two deducts
    /// never wait for each other in a cycle), waiting at most `wait` for each.
    pub async fn acquire(&self, lines: &NormalizedLines) -> Result<Held, StockError> {
        let mut held = Held {
            kv: self.kv.clone(),
            keys: Vec::new(),
        };
        for (goods_id, _) in lines.as_slice() {
            let key = key(goods_id.get());
            match self.lock_one(&key).await {
                Ok(revision) => held.keys.push((key, revision)),
                Err(e) => {
                    held.release().await;
                    return Err(e);
                }
            }
        }
        Ok(held)
    }

    async fn lock_one(&self, key: &str) -> Result<u64, StockError> {
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let error = match self.kv.create(key, "locked".into()).await {
                Ok(revision) => return Ok(revision),
                Err(e) => e,
            };
            if started.elapsed() >= self.wait {
                return Err(match error.kind() {
                    CreateErrorKind::AlreadyExists => StockError::Conflict(format!(
                        "{key} stayed locked for {:?}; try again",
                        self.wait
                    )),
                    _ => StockError::LockUnavailable(error.to_string()),
                });
            }
            tokio::time::sleep(super::backoff(attempt.min(3))).await;
        }
    }
}

impl Held {
    /// Deletes each key only if it still holds our revision: a lock that expired and was
    /// taken by another deduct is not ours to free. Failures are harmless (the TTL frees it).
    pub async fn release(self) {
        for (key, revision) in self.keys.iter().rev() {
            if let Err(e) = self.kv.delete_expect_revision(key, Some(*revision)).await {
                tracing::debug!(%key, error = %e, "could not release a stock lock");
            }
        }
    }
}

/// Under the locks: the same version-fenced write as `optimistic`. The fence is what keeps
/// a lock that expired under a slow holder from overselling; a return or `stock.set` (which
/// take no KV lock) getting in between costs a retry.
pub async fn take(conn: &mut PgConnection, lines: &NormalizedLines) -> Result<Attempt, StockError> {
    super::optimistic::take(conn, lines).await
}
