//! `shop partitions move order|stock --slots A-B --to P`: moves a range of slots of orders
//! or of stock to another partition while the shop serves. For each partition now owning
//! some of the slots, their rows go to `P`'s database ([`shop_order::slot_move`],
//! [`shop_stock::slot_move`]); then the map naming `P` is written, as a compare-and-set on the revision the move started from. Requests for the
//! moving slots are answered `unavailable` with `retry_after_ms` meanwhile (docs/scaling.md
//! "Moving slots").

use std::time::Instant;

use anyhow::Context;
use shop_contracts::partition::{PartitionId, Slot, ORDER_MAP_KEY, STOCK_MAP_KEY};

use crate::cli::MovedKind;
use crate::config::Config;

pub async fn run(
    config: &Config,
    kind: MovedKind,
    slots: std::ops::RangeInclusive<usize>,
    to: PartitionId,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let (name, key, placement, first_url, acquire_timeout) = match kind {
        MovedKind::Order => (
            "order",
            ORDER_MAP_KEY,
            &config.order.settings.placement,
            config.order.database_url.as_str(),
            config.order.acquire_timeout,
        ),
        MovedKind::Stock => (
            "stock",
            STOCK_MAP_KEY,
            &config.stock.settings.placement,
            config.stock.database_url.as_str(),
            config.stock.acquire_timeout,
        ),
    };
    let urls = placement.all_databases(first_url);
    let connect = |p: PartitionId| -> anyhow::Result<sqlx::PgPool> {
        let url = urls.get(usize::from(p.get())).copied().with_context(|| {
            format!(
                "{name} partition {p} has no database: {name}.partition_databases names {} \
                 (partition 0 first)",
                urls.len()
            )
        })?;
        shop_kit::db::connect(url, 1, acquire_timeout)
            .with_context(|| format!("connecting to {name} partition {p}'s database"))
    };
    let store = super::partitions::bucket(config, "shop-partitions").await?;
    let now = shop_kit::partitions::read(&store, key).await?;
    let next = now
        .map
        .with_moved(slots.clone(), to)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let target = connect(to)?;

    // The slots by the partition that owns them now.
    let mut by_owner: Vec<(PartitionId, Vec<Slot>)> = Vec::new();
    for index in slots.clone() {
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
    for (owner, owned) in &by_owner {
        let source = connect(*owner)?;
        let what = format!("moving {} {name} slots from partition {owner}", owned.len());
        let (count, summary, already) = match kind {
            MovedKind::Order => {
                let moved = shop_order::slot_move::move_slots(&source, *owner, &target, to, owned)
                    .await
                    .context(what)?;
                let summary = format!(
                    "{} orders, {} fences, {} idempotency keys",
                    moved.orders, moved.fences, moved.keys
                );
                (moved.slots.len(), summary, moved.already.len())
            }
            MovedKind::Stock => {
                let moved = shop_stock::slot_move::move_slots(&source, *owner, &target, to, owned)
                    .await
                    .context(what)?;
                let summary = format!(
                    "{} goods, {} sell records, {} tombstones",
                    moved.goods, moved.records, moved.tombstones
                );
                (moved.slots.len(), summary, moved.already.len())
            }
        };
        println!(
            "{name} partition {owner} -> {to}: {count} slots, {summary}{}",
            if already == 0 {
                String::new()
            } else {
                format!(" ({already} slots already there from an earlier run)")
            }
        );
    }
    let revision = shop_kit::partitions::write(&store, key, &next, now.revision)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "the data of {name} slots {}-{} is in partition {to}, but the map could not \
                 be written ({e}): run the same move again",
                slots.start(),
                slots.end()
            )
        })?;
    println!(
        "{name} slots {}-{} -> partition {to}: map revision {revision}, in {:.0?}",
        slots.start(),
        slots.end(),
        started.elapsed()
    );
    Ok(())
}
