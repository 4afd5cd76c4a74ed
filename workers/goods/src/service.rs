//! The `goods` micro service: one handler per subject of CONTRACT section 2.

use std::collections::{HashMap, HashSet};

use shop_contracts::goods::{
    Goods, GoodsBatchReply, GoodsBatchRequest, GoodsDetailRequest, GoodsListReply,
    GoodsListRequest, Room, RoomListRequest, RoomSetRequest, UpsertGoods,
};
use shop_contracts::subjects::goods as subject;
use shop_contracts::MAX_ITEMS;
use shop_kit::{ServiceConfig, Worker};
use sqlx::PgPool;

use crate::batch_reads::BatchReads;
use crate::{repo, room_changes, GoodsError, SERVICE_VERSION};

/// The `goods` worker on `client`: its endpoints and batch readers, ready to
/// [`Worker::run`].
pub async fn start(client: async_nats::Client, pool: PgPool) -> Result<Worker, async_nats::Error> {
    let mut worker = Worker::start(
        client.clone(),
        ServiceConfig {
            name: subject::SERVICE,
            version: SERVICE_VERSION,
            description: "goods records and live rooms",
            metadata: HashMap::new(),
            stats: None,
        },
    )
    .await?;
    let reads = BatchReads::start(&mut worker, pool.clone());
    worker.serve(subject::UPSERT, pool.clone(), upsert).await?;
    worker.serve(subject::DETAIL, pool.clone(), detail).await?;
    worker.serve(subject::BATCH, reads, batch).await?;
    worker.serve(subject::LIST, pool.clone(), list).await?;
    worker
        .serve(subject::ROOM_SET, (pool.clone(), client), room_set)
        .await?;
    worker.serve(subject::ROOM_LIST, pool, room_list).await?;
    Ok(worker)
}

async fn upsert(pool: PgPool, req: UpsertGoods) -> Result<Goods, GoodsError> {
    repo::upsert(&pool, req).await
}

#[tracing::instrument(skip_all, fields(goods_id = %req.goods_id))]
async fn detail(pool: PgPool, req: GoodsDetailRequest) -> Result<Goods, GoodsError> {
    repo::detail(&pool, req.goods_id)
        .await?
        .ok_or_else(|| GoodsError::NotFound(format!("goods {} does not exist", req.goods_id)))
}

async fn batch(reads: BatchReads, req: GoodsBatchRequest) -> Result<GoodsBatchReply, GoodsError> {
    let found = reads.by_ids(req.goods_ids.as_slice()).await?;
    let mut reply = GoodsBatchReply {
        goods: Vec::new(),
        missing: Vec::new(),
    };
    for id in &req.goods_ids {
        match found.iter().find(|g| g.goods_id == *id) {
            Some(goods) => reply.goods.push(goods.clone()),
            None => reply.missing.push(*id),
        }
    }
    Ok(reply)
}

async fn list(pool: PgPool, req: GoodsListRequest) -> Result<GoodsListReply, GoodsError> {
    let (goods, more) = repo::list(&pool, &req).await?;
    let next_after_id = if more {
        goods.last().map(|g| g.goods_id)
    } else {
        None
    };
    Ok(GoodsListReply {
        goods,
        next_after_id,
    })
}

#[tracing::instrument(skip_all, fields(room_id = %req.room_id))]
async fn room_set(
    (pool, client): (PgPool, async_nats::Client),
    req: RoomSetRequest,
) -> Result<Room, GoodsError> {
    if req.goods_ids.len() > MAX_ITEMS {
        return Err(GoodsError::BadRequest(
            "a room lists at most 100 goods".into(),
        ));
    }
    let mut seen = HashSet::new();
    if let Some(dup) = req.goods_ids.iter().find(|id| !seen.insert(**id)) {
        return Err(GoodsError::BadRequest(format!(
            "goods {dup} is listed twice"
        )));
    }
    if let Some(current) = req.current_goods_id {
        if !req.goods_ids.contains(&current) {
            return Err(GoodsError::BadRequest(format!(
                "current_goods_id {current} is not in the room's goods_ids"
            )));
        }
    }
    repo::set_room(&pool, req.room_id, &req.goods_ids, req.current_goods_id).await?;
    let room = room_list(
        pool,
        RoomListRequest {
            room_id: req.room_id,
        },
    )
    .await?;
    room_changes::publish(&client, &room).await;
    Ok(room)
}

async fn room_list(pool: PgPool, req: RoomListRequest) -> Result<Room, GoodsError> {
    repo::room(&pool, req.room_id)
        .await?
        .ok_or_else(|| GoodsError::NotFound(format!("room {} does not exist", req.room_id)))
}
