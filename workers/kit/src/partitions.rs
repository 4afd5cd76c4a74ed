//! The partition map as a worker follows it: read from the KV bucket
//! [`shop_contracts::partition::BUCKET`] at start-up, then kept current by a watch on its
//! key, so a new revision (slots moved by `shop partitions`) reaches every worker without a
//! restart. A key that was never written means one partition owning every slot: the shop
//! before it is partitioned.
//!
//! The map only routes. Which partition a request reaches is decided here; what a partition
//! may answer is decided by its own database.

use std::sync::Arc;

use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use shop_contracts::partition::{PartitionId, PartitionMap, Slot, BUCKET};
use thiserror::Error;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::jetstream::{ensure_bucket, SetupError};

/// Where one worker sits among the partitions of its kind: the `partition`,
/// `forward_timeout`, `partition_databases` and `stream_tags` settings that stock and order share
/// (flattened into `[stock]` and `[order]`, so `SHOP_ORDER__PARTITION=2`).
#[derive(Clone, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Placement {
    /// The partition this worker serves (its database is the worker's `database_url`); the
    /// map of `shop partitions` says which slots it owns.
    pub partition: PartitionId,
    /// How long the share of a request asked of another partition may take.
    #[serde(with = "humantime_serde")]
    pub forward_timeout: std::time::Duration,
    /// Every partition's database URL, partition 0 first, comma-separated: for the tools
    /// that read all partitions (`shop audit`). Empty: `database_url` is the only one. A
    /// worker never reads it; it connects only to its own `database_url`.
    pub partition_databases: String,
    /// JetStream placement tags for this partition's own streams (the order partition's
    /// half messages and deadlines, `shop_contracts::txn::OrderStreams`), comma-separated:
    /// e.g. `p1` on the servers of a cluster whose `server_tags` name the partitions they
    /// hold, so the partitions' stream leaders sit on nodes of their own. Empty: none.
    pub stream_tags: String,
}

impl Default for Placement {
    fn default() -> Self {
        Placement {
            partition: PartitionId::default(),
            forward_timeout: std::time::Duration::from_secs(4),
            partition_databases: String::new(),
            stream_tags: String::new(),
        }
    }
}

impl Placement {
    /// [`Self::stream_tags`] as a list.
    pub fn stream_tags(&self) -> Vec<String> {
        self.stream_tags
            .split(',')
            .map(str::trim)
            .filter(|tag| !tag.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The databases of every partition, partition 0 first (`database_url` when
    /// `partition_databases` is empty).
    pub fn all_databases<'a>(&'a self, database_url: &'a str) -> Vec<&'a str> {
        let listed: Vec<&str> = self
            .partition_databases
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .collect();
        if listed.is_empty() {
            vec![database_url]
        } else {
            listed
        }
    }
}

// By hand: the partitions' database URLs may carry passwords.
impl std::fmt::Debug for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Placement")
            .field("partition", &self.partition)
            .field("forward_timeout", &self.forward_timeout)
            .field(
                "partition_databases",
                &crate::server::redact_url(&self.partition_databases),
            )
            .field("stream_tags", &self.stream_tags)
            .finish()
    }
}

/// One revision of a map: the KV revision it was written at (0: never written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    pub revision: u64,
    pub map: PartitionMap,
}

/// A worker's view of one map, updated in place as revisions arrive. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Partitions {
    current: watch::Receiver<Arc<Revision>>,
}

#[derive(Debug, Error)]
pub enum MapError {
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error("reading the partition map {key}: {reason}")]
    Read { key: String, reason: String },
    #[error("{0}")]
    Count(String),
    /// A revision that does not decode is refused, never applied: the worker keeps routing
    /// by the last good one and says so.
    #[error("partition map {key} revision {revision} is not a valid map: {reason}")]
    Invalid {
        key: String,
        revision: u64,
        reason: String,
    },
}

impl Partitions {
    /// The map now.
    pub fn now(&self) -> Arc<Revision> {
        self.current.borrow().clone()
    }
}

/// A worker among the partitions of its kind: its own partition (`me`) and the map that says
/// who owns the rest, with the way to ask them. Cheap to clone.
#[derive(Clone)]
pub struct Peers {
    pub me: PartitionId,
    pub partitions: Partitions,
    pub client: async_nats::Client,
    /// How long a share asked of another partition may take.
    pub timeout: std::time::Duration,
    /// The subject of endpoint `public` in a partition (`stock.part.<p>.<op>`, ...).
    pub subject_of: fn(&str, PartitionId) -> String,
}

impl Peers {
    /// `req` for the endpoint `E` in partition `p`: answered by `here` when `p` is this
    /// worker's partition, else asked of `p`'s workers on its own subject.
    pub async fn on<E, Err, Fut>(
        &self,
        p: PartitionId,
        req: E::Request,
        here: impl FnOnce(E::Request) -> Fut,
    ) -> Result<E::Reply, Err>
    where
        E: shop_contracts::Endpoint,
        Err: From<crate::client::CallError>,
        Fut: std::future::Future<Output = Result<E::Reply, Err>>,
    {
        if p == self.me {
            return here(req).await;
        }
        let subject = (self.subject_of)(E::SUBJECT, p);
        Ok(crate::client::request_on::<E>(&self.client, &subject, &req, self.timeout).await?)
    }
}

/// Opens (or creates, with `replicas`) the bucket, reads `key`'s map and returns it with the
/// task that follows it until `stop` fires.
pub async fn follow(
    js: &jetstream::Context,
    key: &'static str,
    replicas: usize,
    stop: CancellationToken,
) -> Result<
    (
        Partitions,
        impl std::future::Future<Output = Result<(), MapError>>,
    ),
    MapError,
> {
    let store = open(js, replicas).await?;
    let first = read(&store, key).await?;
    tracing::info!(key, revision = first.revision, partitions = ?owners(&first.map),
        "partition map");
    let (publish, current) = watch::channel(Arc::new(first));
    let task = async move {
        // A watch breaks when its server goes away (a restart, a lost heartbeat): the map is
        // still needed, so the watch is opened again, never given up. Each new watch starts
        // from the last value, so a revision written while none was open is not missed;
        // revisions already applied are skipped.
        loop {
            match apply_revisions(&store, key, &publish, &stop).await {
                Ok(()) => return Ok(()),
                Err(error) => tracing::warn!(%error, "partition map watch lost; opening it again"),
            }
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                // Pacing the retries while NATS is away, not waiting for a condition.
                () = tokio::time::sleep(REWATCH_PAUSE) => {}
            }
        }
    };
    Ok((Partitions { current }, task))
}

/// How long a broken watch waits before it is opened again.
const REWATCH_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);

/// Applies `key`'s revisions as they come until `stop` fires (`Ok`) or the watch breaks.
async fn apply_revisions(
    store: &kv::Store,
    key: &'static str,
    publish: &watch::Sender<Arc<Revision>>,
    stop: &CancellationToken,
) -> Result<(), MapError> {
    let mut updates = store
        .watch_with_history(key)
        .await
        .map_err(|e| read_error(key, e))?;
    loop {
        let entry = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            entry = updates.next() => entry,
        };
        let Some(entry) = entry else {
            return Err(read_error(key, "the watch ended"));
        };
        let entry = entry.map_err(|e| read_error(key, e))?;
        if entry.revision <= publish.borrow().revision || entry.operation != kv::Operation::Put {
            continue;
        }
        match decode(key, &entry) {
            Ok(next) => {
                tracing::info!(key, revision = next.revision,
                    partitions = ?owners(&next.map), "partition map changed");
                publish.send_replace(Arc::new(next));
            }
            Err(error) => tracing::error!(%error, "partition map revision refused"),
        }
    }
}

/// The bucket of partition maps, created with `replicas` when absent. It keeps a history, so
/// an operator can see what the map was before a move.
pub async fn open(js: &jetstream::Context, replicas: usize) -> Result<kv::Store, SetupError> {
    ensure_bucket(
        js,
        kv::Config {
            bucket: BUCKET.into(),
            description: "slot -> partition maps of stock and orders".into(),
            history: 16,
            storage: jetstream::stream::StorageType::File,
            num_replicas: replicas,
            ..Default::default()
        },
    )
    .await
}

/// Writes `map` as `key`'s next revision, only if the map is still at `expected` (0: never
/// written): two operators cannot overwrite each other's move. The new revision.
pub async fn write(
    store: &kv::Store,
    key: &str,
    map: &PartitionMap,
    expected: u64,
) -> Result<u64, async_nats::Error> {
    let value = serde_json::to_vec(map)?.into();
    Ok(if expected == 0 {
        store.create(key, value).await?
    } else {
        store.update(key, value, expected).await?
    })
}

/// `key`'s map now, with its revision (0 and the one-partition map when never written).
pub async fn read(store: &kv::Store, key: &'static str) -> Result<Revision, MapError> {
    match store.entry(key).await.map_err(|e| read_error(key, e))? {
        Some(entry) if entry.operation == kv::Operation::Put => decode(key, &entry),
        _ => Ok(Revision {
            revision: 0,
            map: PartitionMap::default(),
        }),
    }
}

/// Makes `key`'s map one of `count` partitions `0..count`: a map never written becomes the
/// even map ([`PartitionMap::even`]); a stored map of other partitions is an error, because
/// the data lives where that map put it and only a move may change it.
pub async fn ensure_count(
    store: &kv::Store,
    key: &'static str,
    count: u16,
) -> Result<Revision, MapError> {
    let stored = read(store, key).await?;
    let want: Vec<u16> = (0..count).collect();
    let have: Vec<u16> = owners(&stored.map);
    if stored.revision == 0 && count > 1 {
        let map = PartitionMap::even(count).map_err(|e| MapError::Count(e.to_string()))?;
        let revision = write(store, key, &map, 0)
            .await
            .map_err(|e| read_error(key, e))?;
        return Ok(Revision { revision, map });
    }
    if have != want {
        return Err(MapError::Count(format!(
            "the {key} map names partitions {have:?}, not 0..{count}: its data lives where that \
             map put it"
        )));
    }
    Ok(stored)
}

fn decode(key: &str, entry: &kv::Entry) -> Result<Revision, MapError> {
    serde_json::from_slice::<PartitionMap>(&entry.value)
        .map(|map| Revision {
            revision: entry.revision,
            map,
        })
        .map_err(|e| MapError::Invalid {
            key: key.into(),
            revision: entry.revision,
            reason: e.to_string(),
        })
}

/// The partitions of a map as plain numbers, for the log.
fn owners(map: &PartitionMap) -> Vec<u16> {
    map.partitions().into_iter().map(PartitionId::get).collect()
}

fn read_error(key: &str, error: impl std::fmt::Display) -> MapError {
    MapError::Read {
        key: key.into(),
        reason: error.to_string(),
    }
}

/// The partition owning every one of `keys`, if one does (none for no keys).
pub fn sole_owner(map: &PartitionMap, mut keys: impl Iterator<Item = i64>) -> Option<PartitionId> {
    let first = map.owner_of(keys.next()?);
    keys.all(|key| map.owner_of(key) == first).then_some(first)
}

/// Groups `keys` by the partition owning each, keeping their order within a group; groups
/// come in ascending partition order.
pub fn group_by_owner<T>(
    map: &PartitionMap,
    keys: impl IntoIterator<Item = T>,
    key_of: impl Fn(&T) -> i64,
) -> Vec<(PartitionId, Vec<T>)> {
    group_by_slot_owner(map, keys, |item| Slot::of_key(key_of(item)))
}

/// [`group_by_owner`] for items that know their slot (an `order_sn` carries it).
pub fn group_by_slot_owner<T>(
    map: &PartitionMap,
    items: impl IntoIterator<Item = T>,
    slot_of: impl Fn(&T) -> Slot,
) -> Vec<(PartitionId, Vec<T>)> {
    let mut groups: Vec<(PartitionId, Vec<T>)> = Vec::new();
    for item in items {
        let owner = map.owner(slot_of(&item));
        match groups.iter_mut().find(|(p, _)| *p == owner) {
            Some((_, group)) => group.push(item),
            None => groups.push((owner, vec![item])),
        }
    }
    groups.sort_by_key(|(p, _)| *p);
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_group_by_their_owner_in_order() {
        let map = PartitionMap::even(4).unwrap();
        let keys: Vec<i64> = (1..=40).collect();
        let groups = group_by_owner(&map, keys.clone(), |k| *k);
        assert!(groups.len() > 1);
        let mut seen: Vec<i64> = Vec::new();
        for (owner, group) in &groups {
            assert!(group.windows(2).all(|w| w[0] < w[1]));
            assert!(group.iter().all(|k| map.owner_of(*k) == *owner));
            seen.extend(group);
        }
        seen.sort_unstable();
        assert_eq!(seen, keys);
        assert!(groups.windows(2).all(|w| w[0].0 < w[1].0));
    }
}
