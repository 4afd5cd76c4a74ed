//! `shop bench order`: concurrent `order.create`s through the running workers, each one unit
//! of one goods picked round-robin from `goods` goods, for users 1..=1000. A create is the
//! whole path of CONTRACT section 5: `goods.batch`, the half message, `stock.deduct` and the
//! order's commit, so this is the figure a shop sees. The orders are left unpaid; the
//! checker closes them at their deadline.

use anyhow::Context;
use serde_json::{json, Value};
use shop_contracts::subjects::{goods as goods_subject, order as subject};
use shop_kit::client::call;

use super::load::{self, TIMEOUT};
use crate::cli::LoadArgs;

const USERS: i64 = 1000;

pub async fn run(
    client: &async_nats::Client,
    goods: i64,
    first_goods_id: i64,
    args: &LoadArgs,
) -> anyhow::Result<()> {
    // The goods, on sale at one euro.
    for goods_id in first_goods_id..first_goods_id + goods {
        let _: Value = call(
            client,
            goods_subject::UPSERT,
            &json!({"goods_id": goods_id, "category_id": 1, "title": format!("bench goods {goods_id}"),
                    "price_cents": 100, "status": "on_sale"}),
            TIMEOUT,
        )
        .await
        .with_context(|| format!("goods.upsert of goods {goods_id}: is the stack up?"))?;
    }
    load::fill_stock(client, first_goods_id..first_goods_id + goods).await?;

    let measured = load::run(
        client,
        subject::CREATE,
        args.concurrency,
        args.seconds,
        "creates",
        move |n| {
            json!({"user_id": 1 + n % USERS,
                   "items": [{"goods_id": first_goods_id + n % goods, "quantity": 1}],
                   "address": "1 Bench St", "receiver_name": "Bench", "receiver_phone": "555-0100"})
        },
    )
    .await?;
    load::report(
        &measured,
        "creates",
        &format!("order goods={goods} concurrency={}", args.concurrency),
        json!({"goods": goods, "concurrency": args.concurrency}),
        &args.out,
        &format!("order-{goods}"),
    )
}
