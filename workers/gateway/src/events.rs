//! Live changes for the event streams: one process-wide subscription to each notification
//! subject (`stock.changed.*`, `goods.room.changed.*`), fanned out to every open stream, so
//! a thousand viewers cost two subscriptions, not two thousand.

use futures::StreamExt;
use shop_contracts::stock::StockChanged;
use shop_contracts::subjects;
use shop_contracts::RoomId;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

/// One notification, as the streams need it.
#[derive(Debug, Clone)]
pub enum Change {
    Stock(StockChanged),
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
                    Ok(change) => Some(Change::Stock(change)),
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
