//! `stock.changed.<goods_id>` notifications (CONTRACT section 7): after a change commits,
//! the goods it touched are handed to one background task per process, which coalesces
//! them, reads their committed `available` and publishes one notification per goods at most
//! every [`INTERVAL`] (about ten per second). A deduct only sends its goods ids into a
//! channel: nothing here is on its critical path. Notifications are hints for the live-room
//! pages, not a source of truth, so one lost in a crash is fine.
//!
//! Its two reads live here rather than in `repo.rs` because they exist only to feed the
//! notifications.

use std::collections::BTreeSet;
use std::time::Duration;

use shop_contracts::stock::StockChanged;
use shop_contracts::subjects::stock as subject;
use shop_contracts::{GoodsId, OrderSn};
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Shortest time between two notifications of one goods.
pub const INTERVAL: Duration = Duration::from_millis(100);

enum Touched {
    Goods(Vec<GoodsId>),
    /// A return: its goods are looked up by the task, off the return's path.
    Returned(OrderSn),
}

/// Where committed changes are reported. Cheap to clone; reporting never waits.
#[derive(Clone)]
pub struct Changes {
    sender: mpsc::UnboundedSender<Touched>,
}

impl Changes {
    /// Starts the publishing task as a background task of `worker`; at its stop the
    /// changes reported so far are published, then the task ends.
    pub fn start(
        worker: &mut shop_kit::Worker,
        client: async_nats::Client,
        pool: PgPool,
    ) -> Changes {
        let (sender, receiver) = mpsc::unbounded_channel();
        worker.background(
            "stock change notifier",
            publish(client, pool, receiver, worker.draining()),
        );
        Changes { sender }
    }

    /// These goods' counts changed in a committed transaction.
    pub fn goods(&self, ids: impl IntoIterator<Item = GoodsId>) {
        let _ = self.sender.send(Touched::Goods(ids.into_iter().collect()));
    }

    /// The stock of this order was given back.
    pub fn returned(&self, order_sn: OrderSn) {
        let _ = self.sender.send(Touched::Returned(order_sn));
    }
}

async fn publish(
    client: async_nats::Client,
    pool: PgPool,
    mut receiver: mpsc::UnboundedReceiver<Touched>,
    draining: CancellationToken,
) -> Result<(), std::convert::Infallible> {
    loop {
        let first = tokio::select! {
            first = receiver.recv() => first,
            _ = draining.cancelled() => {
                receiver.close();
                receiver.recv().await
            }
        };
        let Some(first) = first else { return Ok(()) };
        let mut goods = BTreeSet::new();
        let mut returned = Vec::new();
        let mut add = |touched| match touched {
            Touched::Goods(ids) => goods.extend(ids.into_iter().map(GoodsId::get)),
            Touched::Returned(sn) => returned.push(sn.get()),
        };
        add(first);
        // Everything reported meanwhile goes into this round: that is the coalescing.
        while let Ok(touched) = receiver.try_recv() {
            add(touched);
        }
        if let Err(error) = notify(&client, &pool, goods, &returned).await {
            tracing::warn!(%error, "stock change notifications skipped");
        }
        // At a stop, the next round goes at once.
        tokio::select! {
            _ = tokio::time::sleep(INTERVAL) => {}
            _ = draining.cancelled() => {}
        }
    }
}

async fn notify(
    client: &async_nats::Client,
    pool: &PgPool,
    mut goods: BTreeSet<i64>,
    returned: &[i64],
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    if !returned.is_empty() {
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT DISTINCT (i->>'goods_id')::BIGINT
             FROM sell_records r, jsonb_array_elements(r.items) i
             WHERE r.order_sn = ANY($1)",
        )
        .bind(returned)
        .fetch_all(pool)
        .await?;
        goods.extend(ids);
    }
    if goods.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = goods.into_iter().collect();
    let levels: Vec<(i64, i64)> =
        sqlx::query_as("SELECT goods_id, available FROM stock WHERE goods_id = ANY($1)")
            .bind(&ids)
            .fetch_all(pool)
            .await?;
    for (goods_id, available) in levels {
        let Ok(goods_id) = GoodsId::new(goods_id) else {
            continue;
        };
        let payload = serde_json::to_vec(&StockChanged {
            goods_id,
            available,
        })?;
        client
            .publish(subject::changed(goods_id), payload.into())
            .await?;
    }
    Ok(())
}
