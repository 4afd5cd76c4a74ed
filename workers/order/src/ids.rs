//! Snowflake order_sns: 41 bits of milliseconds since [`EPOCH_MS`], 8 bits of the user's
//! slot (so an order's partition is read from its id: docs/scaling.md), 8 bits of node id, 6
//! bits of sequence (64 ids per millisecond per worker, borrowing the next millisecond past
//! that; a worker creates a few thousand orders a second). The layout is
//! [`OrderSn`]'s; the node id is leased from KV bucket `order_nodes` (create-if-absent,
//! renewed well inside the bucket's max age), so no two running workers share one; a worker
//! whose lease is not renewed in time stops issuing ids (`unavailable`) until it holds one.
//!
//! Ids of one node only ever increase, across every worker that ever held it, even when a
//! clock steps backwards: within a process the generator never goes below its last
//! millisecond, and across processes KV bucket `order_node_marks` (no expiry) keeps a
//! high-water mark per node. A holder writes a mark ahead of its clock before it issues ids up
//! to it, and the next holder of that node starts above the mark.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, kv};
use shop_contracts::partition::Slot;
use shop_contracts::OrderSn;

/// 2024-01-01T00:00:00Z: 41 bits of milliseconds last until 2093.
pub const EPOCH_MS: i64 = 1_704_067_200_000;
pub const NODE_BITS: u32 = OrderSn::SLOT_SHIFT - OrderSn::NODE_SHIFT;
pub const SEQ_BITS: u32 = OrderSn::NODE_SHIFT;
pub const MAX_NODE: u16 = (1 << NODE_BITS) - 1;
const MAX_SEQ: u16 = (1 << SEQ_BITS) - 1;
/// Node-id leases: one key per node held, expiring with the bucket's max age.
pub const BUCKET: &str = "order_nodes";
/// High-water marks: per node, the unix millisecond no id of that node has passed.
pub const MARKS_BUCKET: &str = "order_node_marks";

/// The pure generator: never issues the same id twice for one node, even when the clock
/// steps backwards (it keeps using its last millisecond, borrowing the next one when the
/// sequence runs out, instead of waiting for the clock to catch up).
#[derive(Debug, Clone, Default)]
pub struct Snowflake {
    last_ms: i64,
    seq: u16,
}

impl Snowflake {
    pub fn next(&mut self, node: u16, slot: Slot, now_ms: i64) -> i64 {
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
        (self.last_ms << OrderSn::MS_SHIFT)
            | (slot.bits() << OrderSn::SLOT_SHIFT)
            | (i64::from(node) << OrderSn::NODE_SHIFT)
            | i64::from(self.seq)
    }

    /// From now on, issue only ids of milliseconds after `unix_ms` (a node's high-water mark).
    pub fn start_after(&mut self, unix_ms: i64) {
        let floor = unix_ms - EPOCH_MS;
        if floor >= self.last_ms {
            self.last_ms = floor;
            self.seq = MAX_SEQ;
        }
    }
}

/// Unix milliseconds of an order_sn.
pub fn unix_ms_of(sn: i64) -> i64 {
    (sn >> OrderSn::MS_SHIFT) + EPOCH_MS
}

/// Node id of an order_sn (for tests and logs).
pub fn node_of(sn: i64) -> u16 {
    ((sn >> OrderSn::NODE_SHIFT) & i64::from(MAX_NODE)) as u16
}

/// The wall clock the ids are made from, shifted by `offset_ms` (0 but in fault tests).
#[derive(Debug, Clone, Copy, Default)]
pub struct Clock {
    pub offset_ms: i64,
}

impl Clock {
    fn now_ms(self) -> i64 {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        wall + self.offset_ms
    }
}

#[derive(Debug)]
struct Lease {
    node: u16,
    revision: u64,
    valid_until: Instant,
    /// The high-water mark stored for `node`: no id may be issued past it.
    mark_ms: i64,
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
    clock: Clock,
}

/// The two KV buckets a worker needs.
struct Buckets {
    leases: kv::Store,
    marks: kv::Store,
}

impl Ids {
    /// `None` when no valid lease is held, or when the next id would pass the node's stored
    /// high-water mark (a clock that jumped forward, until the next renewal raises the mark).
    pub fn next(&self, slot: Slot) -> Option<OrderSn> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (node, mark_ms) = match &state.lease {
            Some(lease) if Instant::now() < lease.valid_until => (lease.node, lease.mark_ms),
            _ => return None,
        };
        let mut gen = state.gen.clone();
        let id = gen.next(node, slot, self.clock.now_ms());
        if unix_ms_of(id) > mark_ms {
            return None;
        }
        state.gen = gen;
        OrderSn::new(id).ok()
    }

    pub fn node(&self) -> Option<u16> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.lease.as_ref().map(|l| l.node)
    }

    /// Leases a node id (waiting until one is free); the returned future keeps renewing it,
    /// for the worker to run beside its endpoints.
    pub async fn start(
        js: &jetstream::Context,
        ttl: Duration,
        clock: Clock,
        replicas: usize,
    ) -> Result<(Ids, impl std::future::Future<Output = ()> + Send + 'static), async_nats::Error>
    {
        let buckets = Buckets {
            leases: bucket(
                js,
                BUCKET,
                "snowflake node-id leases of order workers",
                ttl,
                replicas,
            )
            .await?,
            marks: bucket(
                js,
                MARKS_BUCKET,
                "per node id, the millisecond no order_sn of that node has passed",
                Duration::ZERO,
                replicas,
            )
            .await?,
        };
        let ids = Ids {
            state: Arc::new(Mutex::new(State::default())),
            clock,
        };
        let token = format!("{}-{}", std::process::id(), clock.now_ms());
        acquire(&buckets, &ids, &token, ttl).await;
        let renewing = renew_forever(buckets, ids.clone(), token, ttl);
        Ok((ids, renewing))
    }

    /// The mark to store before issuing ids for the next `ttl`: past every id this worker
    /// may issue until its lease runs out (2/3 of the TTL after the renewal that stored it).
    fn next_mark(&self, ttl: Duration) -> i64 {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let issued = state.gen.last_ms + EPOCH_MS;
        self.clock.now_ms().max(issued) + ttl.as_millis() as i64
    }
}

/// Opens a KV bucket, creating it with `replicas` when absent (an existing bucket keeps its
/// replicas); `max_age` zero keeps entries forever.
async fn bucket(
    js: &jetstream::Context,
    name: &str,
    description: &str,
    max_age: Duration,
    replicas: usize,
) -> Result<kv::Store, async_nats::Error> {
    Ok(shop_kit::jetstream::ensure_bucket(
        js,
        kv::Config {
            bucket: name.into(),
            description: description.into(),
            history: 1,
            max_age,
            storage: jetstream::stream::StorageType::File,
            num_replicas: replicas,
            ..Default::default()
        },
    )
    .await?)
}

/// The high-water mark stored for `node` and its revision; 0 when there is none. Only the
/// workers write marks, always as decimal text; a value that does not parse (a hand edit)
/// counts as 0 and is replaced by the next mark written.
async fn read_mark(marks: &kv::Store, node: u16) -> Result<(i64, Option<u64>), async_nats::Error> {
    match marks.entry(node.to_string()).await? {
        Some(entry) if entry.operation == kv::Operation::Put => {
            let text = std::str::from_utf8(&entry.value).unwrap_or("0");
            Ok((text.parse().unwrap_or(0), Some(entry.revision)))
        }
        _ => Ok((0, None)),
    }
}

/// Stores `mark_ms` for `node` unless a higher mark is already stored; returns the mark now
/// stored. Conditional on the revision, so two writers cannot lower each other's mark.
async fn raise_mark(marks: &kv::Store, node: u16, mark_ms: i64) -> Result<i64, async_nats::Error> {
    let (stored, revision) = read_mark(marks, node).await?;
    if stored >= mark_ms {
        return Ok(stored);
    }
    let value = mark_ms.to_string().into_bytes().into();
    match revision {
        Some(revision) => marks.update(node.to_string(), value, revision).await?,
        None => marks.create(node.to_string(), value).await?,
    };
    Ok(mark_ms)
}

/// Tries node ids from a random start until one is created and its mark raised; retries until
/// it succeeds.
async fn acquire(buckets: &Buckets, ids: &Ids, token: &str, ttl: Duration) {
    let start = (ids.clock.now_ms() as u64 ^ u64::from(std::process::id())) as u16 % (MAX_NODE + 1);
    loop {
        for i in 0..=MAX_NODE {
            let node = (start + i) % (MAX_NODE + 1);
            let sent = Instant::now();
            let Ok(revision) = buckets
                .leases
                .create(node.to_string(), token.to_owned().into())
                .await
            else {
                continue;
            };
            // Ours now: start above every id an earlier holder of this node issued.
            let floor = match read_mark(&buckets.marks, node).await {
                Ok((floor, _)) => floor,
                Err(error) => {
                    tracing::warn!(node, %error, "could not read the node's high-water mark");
                    let _ = buckets.leases.delete(node.to_string()).await;
                    break;
                }
            };
            ids.state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .gen
                .start_after(floor);
            let mark_ms = match raise_mark(&buckets.marks, node, ids.next_mark(ttl)).await {
                Ok(mark) => mark,
                Err(error) => {
                    tracing::warn!(node, %error, "could not store the node's high-water mark");
                    let _ = buckets.leases.delete(node.to_string()).await;
                    break;
                }
            };
            let mut state = ids.state.lock().unwrap_or_else(|e| e.into_inner());
            state.lease = Some(Lease {
                node,
                revision,
                valid_until: sent + ttl * 2 / 3,
                mark_ms,
            });
            tracing::info!(node, after_ms = floor, "leased a snowflake node id");
            return;
        }
        tracing::warn!("no snowflake node id leased; retrying");
        tokio::time::sleep(ttl / 4).await;
    }
}

async fn renew_forever(buckets: Buckets, ids: Ids, token: String, ttl: Duration) {
    loop {
        tokio::time::sleep(ttl / 6).await;
        let current = {
            let state = ids.state.lock().unwrap_or_else(|e| e.into_inner());
            state.lease.as_ref().map(|l| (l.node, l.revision))
        };
        let Some((node, revision)) = current else {
            acquire(&buckets, &ids, &token, ttl).await;
            continue;
        };
        let sent = Instant::now();
        match buckets
            .leases
            .update(node.to_string(), token.clone().into(), revision)
            .await
        {
            Ok(revision) => {
                // Raise the mark first; if that fails, keep issuing below the old one.
                let raised = raise_mark(&buckets.marks, node, ids.next_mark(ttl)).await;
                if let Err(error) = &raised {
                    tracing::warn!(node, %error, "could not raise the node's high-water mark");
                }
                let mut state = ids.state.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(lease) = &mut state.lease {
                    lease.revision = revision;
                    lease.valid_until = sent + ttl * 2 / 3;
                    if let Ok(mark_ms) = raised {
                        lease.mark_ms = lease.mark_ms.max(mark_ms);
                    }
                }
            }
            Err(error) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                // Someone else holds it now (ours expired): stop issuing, lease another.
                tracing::warn!(node, %error, "lost the snowflake node lease");
                ids.state.lock().unwrap_or_else(|e| e.into_inner()).lease = None;
            }
            Err(error) => {
                // Unknown outcome (NATS down): keep the old lease until it runs out.
                tracing::warn!(node, %error, "could not renew the snowflake node lease");
                let mut state = ids.state.lock().unwrap_or_else(|e| e.into_inner());
                if state
                    .lease
                    .as_ref()
                    .is_some_and(|l| Instant::now() >= l.valid_until)
                {
                    state.lease = None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = EPOCH_MS + 1_000_000;
    /// The slot of the ids made here (any slot does).
    fn any_slot() -> Slot {
        Slot::of_key(42)
    }

    #[test]
    fn ids_increase_and_carry_the_node() {
        let mut gen = Snowflake::default();
        let mut last = 0;
        for i in 0..10_000 {
            let id = gen.next(7, any_slot(), T + i / 100);
            assert!(id > last, "{id} after {last}");
            assert_eq!(node_of(id), 7);
            assert_eq!(Slot::of_order(OrderSn::new(id).unwrap()), any_slot());
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
            let id = gen.next(3, any_slot(), now);
            assert!(id > last);
            assert!(seen.insert(id));
            last = id;
        }
        // The clock catches up again: still increasing.
        let id = gen.next(3, any_slot(), T + 10_000);
        assert!(id > last);
    }

    #[test]
    fn a_new_holder_starts_after_the_mark_whatever_its_clock() {
        let mut old = Snowflake::default();
        let last = (0..50)
            .map(|i| old.next(9, any_slot(), T + i))
            .max()
            .unwrap();
        // The next holder of node 9 runs an hour behind but starts after the stored mark.
        let mut new = Snowflake::default();
        new.start_after(unix_ms_of(last));
        let behind = T - 3_600_000;
        let ids: Vec<i64> = (0..10_000)
            .map(|_| new.next(9, any_slot(), behind))
            .collect();
        assert!(ids[0] > last, "{} not after {last}", ids[0]);
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        // A mark below what the generator already issued changes nothing.
        let before = new.clone().next(9, any_slot(), behind);
        new.start_after(T - 10_000);
        assert_eq!(new.next(9, any_slot(), behind), before);
    }

    #[test]
    fn ids_of_many_slots_in_one_millisecond_are_unique_and_carry_their_slot() {
        let mut gen = Snowflake::default();
        let mut seen = std::collections::HashSet::new();
        for user in 1..=1_000 {
            let slot = Slot::of_key(user);
            let id = gen.next(4, slot, T);
            assert!(seen.insert(id));
            let sn = OrderSn::new(id).unwrap();
            assert_eq!((Slot::of_order(sn), node_of(id)), (slot, 4));
            assert!(unix_ms_of(id) >= T);
        }
    }

    #[test]
    fn sequence_overflow_borrows_the_next_millisecond() {
        let mut gen = Snowflake::default();
        let ids: Vec<i64> = (0..5000).map(|_| gen.next(1, any_slot(), T)).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
    }
}
