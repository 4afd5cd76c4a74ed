//! Every SQL statement of the goods worker. Functions take a pool or transaction and plain
//! contract types, and return contract types.

use chrono::{DateTime, Utc};
use shop_contracts::goods::{Goods, GoodsListRequest, GoodsStatus, Room, UpsertGoods};
use shop_contracts::{CategoryId, Cents, GoodsId, RoomId};
use sqlx::{PgConnection, PgPool};

use crate::GoodsError;

const GOODS_COLUMNS: &str = "goods_id, category_id, title, brief, brand_name, code, price_cents, \
     market_price_cents, status, head_imgs, videos, detail, updated_at";

#[derive(sqlx::FromRow)]
struct GoodsRow {
    goods_id: i64,
    category_id: i64,
    title: String,
    brief: String,
    brand_name: String,
    code: String,
    price_cents: i64,
    market_price_cents: i64,
    status: String,
    head_imgs: Vec<String>,
    videos: Vec<String>,
    detail: Vec<String>,
    updated_at: DateTime<Utc>,
}

impl GoodsRow {
    /// The schema's CHECK constraints make every stored row valid; a row that is not is a
    /// bug worth an `internal` error rather than a panic.
    fn into_goods(self) -> Result<Goods, GoodsError> {
        let corrupt = |what: &str| {
            GoodsError::Unexpected(std::sync::Arc::new(sqlx::Error::Decode(
                format!("stored goods {what} out of range").into(),
            )))
        };
        Ok(Goods {
            goods_id: GoodsId::new(self.goods_id).map_err(|_| corrupt("id"))?,
            category_id: CategoryId::new(self.category_id).map_err(|_| corrupt("category"))?,
            title: self.title,
            brief: self.brief,
            brand_name: self.brand_name,
            code: self.code,
            price_cents: Cents::new(self.price_cents).map_err(|_| corrupt("price"))?,
            market_price_cents: Cents::new(self.market_price_cents)
                .map_err(|_| corrupt("price"))?,
            status: GoodsStatus::parse(&self.status).ok_or_else(|| corrupt("status"))?,
            head_imgs: self.head_imgs,
            videos: self.videos,
            detail: self.detail,
            updated_at: self.updated_at,
        })
    }
}

fn into_goods(rows: Vec<GoodsRow>) -> Result<Vec<Goods>, GoodsError> {
    rows.into_iter().map(GoodsRow::into_goods).collect()
}

fn urls(list: Vec<shop_contracts::goods::Url>) -> Vec<String> {
    list.into_iter().map(|u| u.into_string()).collect()
}

/// Inserts a goods (id assigned when absent) or replaces the one with the given id.
pub async fn upsert(pool: &PgPool, goods: UpsertGoods) -> Result<Goods, GoodsError> {
    let market = goods.market_price_cents.unwrap_or(goods.price_cents);
    let mut tx = pool.begin().await?;
    let row: GoodsRow = sqlx::query_as(&format!(
        "INSERT INTO goods (goods_id, category_id, title, brief, brand_name, code, price_cents,
                            market_price_cents, status, head_imgs, videos, detail)
         VALUES (COALESCE($1, nextval(pg_get_serial_sequence('goods', 'goods_id'))),
                 $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (goods_id) DO UPDATE SET
             category_id = EXCLUDED.category_id, title = EXCLUDED.title, brief = EXCLUDED.brief,
             brand_name = EXCLUDED.brand_name, code = EXCLUDED.code,
             price_cents = EXCLUDED.price_cents, market_price_cents = EXCLUDED.market_price_cents,
             status = EXCLUDED.status, head_imgs = EXCLUDED.head_imgs, videos = EXCLUDED.videos,
             detail = EXCLUDED.detail, updated_at = now()
         RETURNING {GOODS_COLUMNS}"
    ))
    .bind(goods.goods_id.map(GoodsId::get))
    .bind(goods.category_id.get())
    .bind(goods.title.as_str())
    .bind(goods.brief.as_str())
    .bind(goods.brand_name.as_str())
    .bind(goods.code.as_str())
    .bind(goods.price_cents.get())
    .bind(market.get())
    .bind(goods.status.as_str())
    .bind(urls(goods.head_imgs))
    .bind(urls(goods.videos))
    .bind(urls(goods.detail))
    .fetch_one(&mut *tx)
    .await?;
    if goods.goods_id.is_some() {
        // An explicit id must never be handed out again by the sequence later.
        sqlx::query(
            "SELECT setval(pg_get_serial_sequence('goods', 'goods_id'), $1)
             WHERE $1 > (SELECT last_value FROM goods_goods_id_seq)",
        )
        .bind(row.goods_id)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    row.into_goods()
}

pub async fn detail(pool: &PgPool, id: GoodsId) -> Result<Option<Goods>, GoodsError> {
    let row: Option<GoodsRow> = sqlx::query_as(&format!(
        "SELECT {GOODS_COLUMNS} FROM goods WHERE goods_id = $1"
    ))
    .bind(id.get())
    .fetch_optional(pool)
    .await?;
    row.map(GoodsRow::into_goods).transpose()
}

/// The goods among `ids` that exist, in no particular order.
pub async fn by_ids(conn: &mut PgConnection, ids: &[GoodsId]) -> Result<Vec<Goods>, GoodsError> {
    let ids: Vec<i64> = ids.iter().map(|id| id.get()).collect();
    let rows: Vec<GoodsRow> = sqlx::query_as(&format!(
        "SELECT {GOODS_COLUMNS} FROM goods WHERE goods_id = ANY($1)"
    ))
    .bind(ids)
    .fetch_all(conn)
    .await?;
    into_goods(rows)
}

/// One page of goods by ascending id, fetching one extra row to know whether more follow.
pub async fn list(
    pool: &PgPool,
    request: &GoodsListRequest,
) -> Result<(Vec<Goods>, bool), GoodsError> {
    let limit = request.limit.unwrap_or_default().get();
    let rows: Vec<GoodsRow> = sqlx::query_as(&format!(
        "SELECT {GOODS_COLUMNS} FROM goods
         WHERE ($1::BIGINT IS NULL OR category_id = $1)
           AND ($2::TEXT IS NULL OR status = $2)
           AND goods_id > COALESCE($3, 0)
         ORDER BY goods_id
         LIMIT $4"
    ))
    .bind(request.category_id.map(CategoryId::get))
    .bind(request.status.map(GoodsStatus::as_str))
    .bind(request.after_id.map(GoodsId::get))
    .bind(limit + 1)
    .fetch_all(pool)
    .await?;
    let mut goods = into_goods(rows)?;
    let more = goods.len() as i64 > limit;
    goods.truncate(limit as usize);
    Ok((goods, more))
}

/// Replaces a room's list. The caller has checked that `current` is in `goods_ids` and that
/// the ids are distinct; unknown goods are reported as [`GoodsError::NotFound`].
pub async fn set_room(
    pool: &PgPool,
    room: RoomId,
    goods_ids: &[GoodsId],
    current: Option<GoodsId>,
) -> Result<(), GoodsError> {
    let mut tx = pool.begin().await?;
    let found = by_ids(&mut tx, goods_ids).await?;
    if let Some(missing) = goods_ids
        .iter()
        .find(|id| !found.iter().any(|g| g.goods_id == **id))
    {
        return Err(GoodsError::NotFound(format!(
            "goods {missing} does not exist"
        )));
    }
    sqlx::query(
        "INSERT INTO rooms (room_id, current_goods_id) VALUES ($1, $2)
         ON CONFLICT (room_id) DO UPDATE SET current_goods_id = $2, updated_at = now()",
    )
    .bind(room.get())
    .bind(current.map(GoodsId::get))
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM room_goods WHERE room_id = $1")
        .bind(room.get())
        .execute(&mut *tx)
        .await?;
    let ids: Vec<i64> = goods_ids.iter().map(|id| id.get()).collect();
    sqlx::query(
        "INSERT INTO room_goods (room_id, position, goods_id)
         SELECT $1, ord::INT, id FROM unnest($2::BIGINT[]) WITH ORDINALITY AS t(id, ord)",
    )
    .bind(room.get())
    .bind(ids)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// A room with its goods in the room's order, or `None` for an unknown room.
pub async fn room(pool: &PgPool, room: RoomId) -> Result<Option<Room>, GoodsError> {
    let mut conn = pool.acquire().await?;
    let current: Option<Option<i64>> =
        sqlx::query_scalar("SELECT current_goods_id FROM rooms WHERE room_id = $1")
            .bind(room.get())
            .fetch_optional(&mut *conn)
            .await?;
    let Some(current) = current else {
        return Ok(None);
    };
    // `USING (goods_id)` merges the join column, so the plain column list still works.
    let rows: Vec<GoodsRow> = sqlx::query_as(&format!(
        "SELECT {GOODS_COLUMNS} FROM room_goods JOIN goods USING (goods_id)
         WHERE room_goods.room_id = $1 ORDER BY room_goods.position"
    ))
    .bind(room.get())
    .fetch_all(&mut *conn)
    .await?;
    Ok(Some(Room {
        room_id: room,
        current_goods_id: current.map(GoodsId::new).transpose().ok().flatten(),
        goods: into_goods(rows)?,
    }))
}
