//! `goods.room.changed.<room_id>` (CONTRACT section 7): after `goods.room.set` commits, the
//! room as `goods.room.list` returns it is published on core NATS, for the live-room pages.
//! A notification, not a source of truth: a failed publish is logged and the set still
//! succeeds (a viewer that missed it reads the room again).

use shop_contracts::goods::Room;
use shop_contracts::subjects::goods as subject;

pub async fn publish(client: &async_nats::Client, room: &Room) {
    let payload = match serde_json::to_vec(room) {
        Ok(payload) => payload,
        Err(error) => return tracing::warn!(%error, "could not encode a room notification"),
    };
    if let Err(error) = client
        .publish(subject::room_changed(room.room_id), payload.into())
        .await
    {
        tracing::warn!(room_id = %room.room_id, %error, "room change not published");
    }
}
