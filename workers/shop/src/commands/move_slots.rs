//! `shop partitions move order --slots A-B --to P`: moves a range of slots of orders to
//! another partition while the shop serves. For each partition now owning some of the slots,
//! their rows go to `P`'s database ([`shop_order::slot_move`]); then the map naming `P` is
//! written, as a compare-and-set on the revision the move started from. Requests for the
//! moving slots are answered `unavailable` with `retry_after_ms` meanwhile (docs/scaling.md
//! "Moving slots").

use std::time::Instant;

use anyhow::{bail, Context};
use shop_contracts::partition::{PartitionId, Slot, ORDER_MAP_KEY};

use crate::cli::MovedKind;
use crate::config::Config;

pub async fn run(
    config: &Config,
    kind: MovedKind,
    slots: std::ops::RangeInclusive<usize>,
    to: PartitionId,
) -> anyhow::Result<()> {
    match kind {
        MovedKind::Order => move_orders(config, slots, to).await,
        MovedKind::Stock => bail!(
            "moving stock slots is not built yet (issue 19): only orders move; stock's map \
             changes only with its data"
        ),
    }
}

async fn move_orders(
    config: &Config,
    range: std::ops::RangeInclusive<usize>,
    to: PartitionId,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let urls = config
        .order
        .settings
        .placement
        .all_databases(&config.order.database_url);
    let url_of = |p: PartitionId| {
        urls.get(usize::from(p.get())).copied().with_context(|| {
            format!(
                "order partition {p} has no database: order.partition_databases names {} \
                 (partition 0 first)",
                urls.len()
            )
        })
    };
    let connect = |p: PartitionId| -> anyhow::Result<sqlx::PgPool> {
        shop_kit::db::connect(url_of(p)?, 1, config.order.acquire_timeout)
            .with_context(|| format!("connecting to order partition {p}'s database"))
    };
    let store = super::partitions::bucket(config, "shop-partitions").await?;
    let now = shop_kit::partitions::read(&store, ORDER_MAP_KEY).await?;
    let next = now
        .map
        .with_moved(range.clone(), to)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let target = connect(to)?;

    // The slots by the partition that owns them now.
    let mut by_owner: Vec<(PartitionId, Vec<Slot>)> = Vec::new();
    for index in range.clone() {
        let slot = Slot::new(index).map_err(|e| anyhow::anyhow!("{e}"))?;
        let owner = now.map.owner(slot);
        if owner == to {
            continue;
        }
        match by_owner.iter_mut().find(|(p, _)| *p == owner) {
            Some((_, slots)) => slots.push(slot),
            None => by_owner.push((owner, vec![slot])),
        }
    }
    let (mut orders, mut fences) = (0, 0);
    for (owner, slots) in &by_owner {
        let source = connect(*owner)?;
        let moved = shop_order::slot_move::move_slots(&source, *owner, &target, to, slots)
            .await
            .with_context(|| format!("moving {} slots from partition {owner}", slots.len()))?;
        orders += moved.orders;
        fences += moved.fences;
        println!(
            "partition {owner} -> {to}: {} slots, {} orders, {} fences, {} idempotency keys{}",
            moved.slots.len(),
            moved.orders,
            moved.fences,
            moved.keys,
            if moved.already.is_empty() {
                String::new()
            } else {
                format!(
                    " ({} already there from an earlier run)",
                    moved.already.len()
                )
            }
        );
    }
    let revision = shop_kit::partitions::write(&store, ORDER_MAP_KEY, &next, now.revision)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "the data of slots {}-{} is in partition {to}, but the map could not be \
                 written ({e}): run the same move again",
                range.start(),
                range.end()
            )
        })?;
    println!(
        "order slots {}-{} -> partition {to}: {orders} orders and {fences} fences moved, map \
         revision {revision}, in {:.0?}",
        range.start(),
        range.end(),
        started.elapsed()
    );
    Ok(())
}
