//! Live changes for the event streams: one process-wide subscription to each notification
//! subject (`stock.changed.*`, `goods.room.changed.*`), fanned out to every open stream, so
//! a thousand viewers cost two subscriptions, not two thousand. A stock change is encoded
//! once, here, as the Server-Sent Events frame every stream writes: each viewer sends the
//! same reference-counted buffer, so 20,000 viewers of a room cost one encoding per change,
//! not 20,000 (and the channel's slots hold those shared buffers, not a copy per viewer).

use bytes::Bytes;
use futures::StreamExt;
use shop_contracts::stock::StockChanged;
use shop_contracts::subjects;
use shop_contracts::GoodsId;
use shop_contracts::RoomId;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

/// One notification, as the streams need it.
#[derive(Debug, Clone)]
pub enum Change {
    /// A goods' stock changed; `frame` is the whole `stock` event as the streams send it.
    Stock { goods_id: GoodsId, frame: Bytes },
    /// The room's list or its presented goods changed: viewers read it again.
    Room(RoomId),
}

#[derive(Clone)]
pub struct Hub {
    sender: broadcast::Sender<Change>,
}

/// Buffered changes per viewer; a viewer further behind re-reads its room instead.
const BUFFER: usize = 1024;

impl Hub {
    /// Subscribes and starts forwarding; the task ends when the connection closes.
    pub async fn start(
        client: &async_nats::Client,
    ) -> Result<(Hub, JoinHandle<()>), async_nats::SubscribeError> {
        let (sender, _) = broadcast::channel(BUFFER);
        let stock = client.subscribe(subjects::stock::CHANGED_ALL).await?;
        let rooms = client.subscribe(subjects::goods::ROOM_CHANGED_ALL).await?;
        let forward = sender.clone();
        let task = tokio::spawn(async move {
            let stock = stock.filter_map(|m| async move {
                match serde_json::from_slice::<StockChanged>(&m.payload) {
                    Ok(change) => Some(Change::Stock {
                        goods_id: change.goods_id,
                        frame: frame("stock", &change),
                    }),
                    Err(error) => {
                        tracing::warn!(subject = %m.subject, %error, "malformed stock notification");
                        None
                    }
                }
            });
            let rooms = rooms.filter_map(|m| async move {
                let id = m.subject.rsplit('.').next()?.parse::<i64>().ok()?;
                RoomId::new(id).ok().map(Change::Room)
            });
            let mut changes = std::pin::pin!(futures::stream::select(stock, rooms));
            while let Some(change) = changes.next().await {
                // No viewer is not an error: the change is simply not needed.
                let _ = forward.send(change);
            }
        });
        Ok((Hub { sender }, task))
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.sender.subscribe()
    }
}

/// One Server-Sent Events frame: `event: <name>`, then `data: <value as JSON>` on one line
/// (compact JSON holds no newline), then the blank line that ends the event.
pub fn frame(name: &str, value: &impl serde::Serialize) -> Bytes {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    // Serialising a contract type into memory cannot fail: it has no map with non-string keys.
    if serde_json::to_writer(&mut out, value).is_err() {
        out.truncate(0);
        out.extend_from_slice(b": unencodable event\n\n");
        return Bytes::from(out);
    }
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_is_one_event_with_its_json_on_one_data_line() {
        let change = StockChanged {
            goods_id: GoodsId::new(7).unwrap(),
            available: 3,
        };
        assert_eq!(
            &frame("stock", &change)[..],
            b"event: stock\ndata: {\"goods_id\":7,\"available\":3}\n\n"
        );
    }
}
