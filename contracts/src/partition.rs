//! Partitions: how stock and orders spread over many databases without clients seeing it.
//!
//! A fixed space of [`SLOTS`] slots; every key (a `goods_id` for stock, a `user_id` for
//! orders) falls in one slot by [`Slot::of_key`], and every slot is owned by one partition
//! ([`PartitionMap`]). The map is data, not code: it lives in the replicated KV bucket
//! [`BUCKET`] (key [`STOCK_MAP_KEY`] for stock, [`ORDER_MAP_KEY`] for orders: their
//! partition counts are independent), each change a new KV revision, so slots move between
//! partitions without a restart. Each partition has a database of its own, and its workers
//! serve the internal subjects `stock.part.<partition>.<op>`
//! ([`crate::subjects::stock::partition`]) or `order.part.<partition>.<op>`
//! ([`crate::subjects::order::partition`]). An `order_sn` carries its user's slot, so an
//! order is found from its id alone.
//!
//! The slot of a key is the FNV-1a 32-bit hash of its decimal digits modulo 256: the same
//! hash nats-server's subject mapping `{{partition(256,N)}}` computes over a subject token,
//! so a subject carrying the key (e.g. `stock.k.<goods_id>`) could be mapped onto its slot
//! by the server itself and agree with every worker.

use serde::{Deserialize, Serialize};

use crate::ids::RangeError;

/// The number of slots. Fixed for the life of a shop: changing it would move every key.
pub const SLOTS: usize = 256;
/// Partitions a map may name (`0..MAX_PARTITIONS`): far more than slots could use.
pub const MAX_PARTITIONS: u16 = 1024;
/// The detail (`true`) of an `unavailable` that says the key's slot was moved to another
/// partition since the request was routed: nothing was done, and the router's map, newer,
/// says where to go.
pub const SLOT_MOVED_DETAIL: &str = "slot_moved";
/// The KV bucket holding the partition maps.
pub const BUCKET: &str = "shop_partitions";
/// The key of the stock partition map in [`BUCKET`].
pub const STOCK_MAP_KEY: &str = "stock";
/// The key of the order partition map in [`BUCKET`] (orders are keyed by `user_id`).
pub const ORDER_MAP_KEY: &str = "order";

/// One of the [`SLOTS`] slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Slot(u8);

impl Slot {
    /// The slot of a key (a goods id, a user id): FNV-1a 32 of its decimal digits, mod 256.
    pub fn of_key(key: i64) -> Slot {
        // The decimal digits, written into a stack buffer: every routed request hashes
        // each of its keys, so no allocation per key.
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        let mut rest = key.unsigned_abs();
        loop {
            at -= 1;
            digits[at] = b'0' + (rest % 10) as u8;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        let mut hash: u32 = 0x811c_9dc5;
        if key < 0 {
            hash = (hash ^ u32::from(b'-')).wrapping_mul(0x0100_0193);
        }
        for &byte in &digits[at..] {
            hash ^= u32::from(byte);
            hash = hash.wrapping_mul(0x0100_0193);
        }
        Slot((hash % SLOTS as u32) as u8)
    }

    /// The slot an `order_sn` carries: its user's ([`crate::OrderSn::SLOT_SHIFT`]).
    pub fn of_order(sn: crate::OrderSn) -> Slot {
        Slot(((sn.get() >> crate::OrderSn::SLOT_SHIFT) & 0xff) as u8)
    }

    /// The slot as it is stored in an `order_sn`.
    pub fn bits(self) -> i64 {
        i64::from(self.0)
    }

    pub fn index(self) -> usize {
        usize::from(self.0)
    }

    pub fn new(index: usize) -> Result<Slot, RangeError> {
        u8::try_from(index)
            .map(Slot)
            .map_err(|_| RangeError("a slot is in 0..=255"))
    }
}

/// A partition: one database (one PostgreSQL server in production) and the workers on it.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(try_from = "u16", into = "u16")]
pub struct PartitionId(u16);

impl PartitionId {
    pub fn new(value: u16) -> Result<PartitionId, RangeError> {
        if value < MAX_PARTITIONS {
            Ok(PartitionId(value))
        } else {
            Err(RangeError("a partition id is in 0..1024"))
        }
    }

    pub fn get(self) -> u16 {
        self.0
    }
}

impl TryFrom<u16> for PartitionId {
    type Error = RangeError;
    fn try_from(value: u16) -> Result<Self, RangeError> {
        PartitionId::new(value)
    }
}

impl From<PartitionId> for u16 {
    fn from(id: PartitionId) -> u16 {
        id.0
    }
}

impl std::fmt::Display for PartitionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for PartitionId {
    type Err = RangeError;
    fn from_str(text: &str) -> Result<Self, RangeError> {
        let value = text
            .parse::<u16>()
            .map_err(|_| RangeError("a partition id is in 0..1024"))?;
        PartitionId::new(value)
    }
}

/// Which partition owns each slot. Always exactly [`SLOTS`] entries (checked on decode).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "MapBody", into = "MapBody")]
pub struct PartitionMap {
    owners: Vec<PartitionId>,
}

/// The JSON form: `{"slots":[<partition of slot 0>, ..., <partition of slot 255>]}`.
#[derive(Serialize, Deserialize)]
struct MapBody {
    slots: Vec<PartitionId>,
}

impl TryFrom<MapBody> for PartitionMap {
    type Error = RangeError;
    fn try_from(body: MapBody) -> Result<Self, RangeError> {
        if body.slots.len() == SLOTS {
            Ok(PartitionMap { owners: body.slots })
        } else {
            Err(RangeError(
                "a partition map names the owner of each of the 256 slots",
            ))
        }
    }
}

impl From<PartitionMap> for MapBody {
    fn from(map: PartitionMap) -> MapBody {
        MapBody { slots: map.owners }
    }
}

impl Default for PartitionMap {
    /// One partition, 0, owning every slot: the shop before it is partitioned.
    fn default() -> Self {
        PartitionMap::even(1).expect("one partition is a valid map")
    }
}

impl PartitionMap {
    /// `count` partitions `0..count`, each owning one contiguous range of slots of (nearly)
    /// equal size, so a later move of a range touches one or two partitions.
    pub fn even(count: u16) -> Result<PartitionMap, RangeError> {
        if count == 0 || usize::from(count) > SLOTS {
            return Err(RangeError("a map has 1..=256 partitions"));
        }
        let owners = (0..SLOTS)
            .map(|slot| PartitionId((slot * usize::from(count) / SLOTS) as u16))
            .collect();
        Ok(PartitionMap { owners })
    }

    pub fn owner(&self, slot: Slot) -> PartitionId {
        self.owners[slot.index()]
    }

    /// The partition owning `key`'s slot.
    pub fn owner_of(&self, key: i64) -> PartitionId {
        self.owner(Slot::of_key(key))
    }

    /// Whether more than one partition owns slots (without [`Self::partitions`]' copy: a
    /// request path asks it).
    pub fn is_split(&self) -> bool {
        self.owners.iter().any(|&owner| owner != self.owners[0])
    }

    /// Every partition that owns at least one slot, ascending.
    pub fn partitions(&self) -> Vec<PartitionId> {
        let mut all = self.owners.clone();
        all.sort_unstable();
        all.dedup();
        all
    }

    /// The map with slots `slots` (inclusive range) given to `to`.
    pub fn with_moved(
        &self,
        slots: std::ops::RangeInclusive<usize>,
        to: PartitionId,
    ) -> Result<PartitionMap, RangeError> {
        if *slots.end() >= SLOTS || slots.is_empty() {
            return Err(RangeError("slots are a range within 0..=255"));
        }
        let mut owners = self.owners.clone();
        for slot in slots {
            owners[slot] = to;
        }
        Ok(PartitionMap { owners })
    }

    /// Contiguous runs of slots with their owner, for display: `(first, last, owner)`.
    pub fn ranges(&self) -> Vec<(usize, usize, PartitionId)> {
        let mut ranges: Vec<(usize, usize, PartitionId)> = Vec::new();
        for (slot, &owner) in self.owners.iter().enumerate() {
            match ranges.last_mut() {
                Some((_, last, current)) if *current == owner => *last = slot,
                _ => ranges.push((slot, slot, owner)),
            }
        }
        ranges
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_map_is_split_when_a_second_partition_owns_a_slot() {
        assert!(!PartitionMap::default().is_split());
        assert!(PartitionMap::even(2).unwrap().is_split());
        let all_to_1 = PartitionMap::default()
            .with_moved(0..=255, PartitionId::new(1).unwrap())
            .unwrap();
        assert!(!all_to_1.is_split());
        let one_slot = PartitionMap::default()
            .with_moved(255..=255, PartitionId::new(1).unwrap())
            .unwrap();
        assert!(one_slot.is_split());
    }

    #[test]
    fn the_slot_is_fnv1a_of_the_decimal_key_as_nats_partition_computes_it() {
        // FNV-1a 32 of "1" is 0x340ca71c, of "42" 0x87e38583 (nats-server's
        // getHashPartition writes the token's bytes into Go's fnv.New32a and takes the sum
        // modulo the partition count).
        assert_eq!(Slot::of_key(1).index(), 0x1c);
        assert_eq!(Slot::of_key(42).index(), 0x83);
        let spread: std::collections::HashSet<_> = (1..=10_000).map(Slot::of_key).collect();
        assert_eq!(spread.len(), SLOTS, "10,000 ids reach every slot");
    }

    #[test]
    fn the_slot_hashes_exactly_the_decimal_text_of_the_key() {
        let by_text = |key: i64| {
            let mut hash: u32 = 0x811c_9dc5;
            for byte in key.to_string().bytes() {
                hash ^= u32::from(byte);
                hash = hash.wrapping_mul(0x0100_0193);
            }
            (hash % SLOTS as u32) as usize
        };
        for key in (-1_000..1_000).chain([i64::MIN, i64::MAX, (1 << 53) - 1, 10, 100]) {
            assert_eq!(Slot::of_key(key).index(), by_text(key), "key {key}");
        }
    }

    #[test]
    fn an_even_map_gives_each_partition_one_range() {
        let map = PartitionMap::even(3).unwrap();
        assert_eq!(
            map.ranges(),
            vec![
                (0, 85, PartitionId(0)),
                (86, 170, PartitionId(1)),
                (171, 255, PartitionId(2))
            ]
        );
        assert_eq!(map.partitions().len(), 3);
        assert_eq!(PartitionMap::default().partitions(), vec![PartitionId(0)]);
        assert!(PartitionMap::even(0).is_err());
    }

    #[test]
    fn a_map_round_trips_and_refuses_a_wrong_length() {
        let map = PartitionMap::even(4)
            .unwrap()
            .with_moved(0..=15, PartitionId(3))
            .unwrap();
        let text = serde_json::to_string(&map).unwrap();
        assert!(text.starts_with("{\"slots\":[3,3,"), "{text}");
        assert_eq!(serde_json::from_str::<PartitionMap>(&text).unwrap(), map);
        assert!(serde_json::from_str::<PartitionMap>("{\"slots\":[0,1]}").is_err());
        assert!(serde_json::from_str::<PartitionMap>(&format!(
            "{{\"slots\":[{}]}}",
            vec!["5000"; 256].join(",")
        ))
        .is_err());
    }
}
