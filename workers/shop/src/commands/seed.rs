//! `shop seed`: demo data through the running workers, safe to run again.

use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use shop_contracts::endpoint::{GoodsRoomSet, GoodsUpsert, StockGet, StockSet};
use shop_kit::client::{request_json, CallError};

use crate::config::Config;

const TIMEOUT: Duration = Duration::from_secs(5);

/// Ten goods of a beauty live room: (title, brand, price in cents).
const GOODS: [(&str, &str, i64); 10] = [
    ("Hydrating serum 30ml", "Aqua Lab", 12_900),
    ("Matte lipstick #07", "Rouge Co", 8_900),
    ("Sunscreen SPF50 50ml", "Helios", 6_900),
    ("Cleansing balm 100g", "Aqua Lab", 9_900),
    ("Eye cream 15g", "Lumen", 15_900),
    ("Sheet masks x10", "Petal", 4_900),
    ("Setting spray 100ml", "Rouge Co", 7_900),
    ("Cushion foundation", "Lumen", 16_900),
    ("Hair oil 50ml", "Silk Road", 5_900),
    ("Perfume 30ml", "Helios", 29_900),
];

pub async fn run(config: &Config, room_id: i64, stock: i64) -> anyhow::Result<()> {
    let client = shop_kit::server::connect(&config.nats_target("shop-seed", None))
        .await
        .context("connecting to NATS")?;
    seed(&client, room_id, stock).await
}

/// Upserts goods 1..=10, puts them in `room_id` with the first one presented, and gives each
/// goods `stock` units if it has no stock record yet (so a re-run never resets sales).
pub async fn seed(client: &async_nats::Client, room_id: i64, stock: i64) -> anyhow::Result<()> {
    let mut ids = Vec::new();
    for (i, (title, brand, price)) in GOODS.iter().enumerate() {
        let goods_id = i as i64 + 1;
        let body = json!({
            "goods_id": goods_id, "category_id": 1 + (i as i64 % 3), "title": title, "brand_name": brand,
            "brief": format!("{title}, live-room price"), "code": format!("SKU-{goods_id:04}"),
            "price_cents": price, "market_price_cents": price + price / 5, "status": "on_sale",
            "head_imgs": [format!("https://img.example.com/goods/{goods_id}/1.jpg")],
        });
        request_json::<GoodsUpsert>(client, body, TIMEOUT)
            .await
            .context("goods.upsert")?;
        ids.push(goods_id);
    }
    let room = json!({"room_id": room_id, "goods_ids": ids, "current_goods_id": ids[0]});
    request_json::<GoodsRoomSet>(client, room, TIMEOUT)
        .await
        .context("goods.room.set")?;
    tracing::info!(room_id, goods = ids.len(), "goods and room seeded");

    for goods_id in ids {
        let current =
            request_json::<StockGet>(client, json!({"goods_ids": [goods_id]}), TIMEOUT).await;
        match current {
            Ok(_) => continue,
            Err(CallError::Refused(e)) if e.code == shop_contracts::ErrorCode::NotFound => {}
            Err(CallError::NoAnswer { .. }) => {
                tracing::warn!("no stock worker answers; stock not seeded");
                return Ok(());
            }
            Err(e) => return Err(e).context("stock.get"),
        }
        request_json::<StockSet>(
            client,
            json!({"goods_id": goods_id, "available": stock}),
            TIMEOUT,
        )
        .await
        .context("stock.set")?;
    }
    tracing::info!(units = stock, "stock seeded");
    Ok(())
}
