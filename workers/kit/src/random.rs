//! Enough randomness for jitter and instance ids without a dependency: std's per-process
//! random hash keys.

pub(crate) fn random_u64() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(std::time::Instant::now())
}
