//! `GET /v1/rooms/{room_id}/events`: Server-Sent Events for one room. The first event is
//! the whole room (`room`); then `stock` `{goods_id, available}` for the room's goods and
//! `room` again whenever the room changes (or when this viewer fell behind and may have
//! missed something). Keep-alive comments hold idle connections open; every stream ends
//! when the server stops, so shutdown does not wait for viewers.

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use shop_contracts::stock::StockChanged;
use shop_contracts::{GoodsId, RoomId};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::WaitForCancellationFutureOwned;

use crate::events::Change;
use crate::extract::Path;
use crate::problem::Problem;
use crate::routes::goods::room_view;
use crate::shutdown::Running;
use crate::state::{AppState, Nats};
use crate::views::RoomView;

struct Viewer {
    nats: Nats,
    room_id: RoomId,
    goods: HashSet<GoodsId>,
    changes: broadcast::Receiver<Change>,
    stopping: std::pin::Pin<Box<WaitForCancellationFutureOwned>>,
    ready: VecDeque<Event>,
    /// Counts this stream as open until it ends.
    _open: Running,
}

impl Viewer {
    fn room_event(&mut self, room: &RoomView) -> Event {
        self.goods = room.goods.iter().map(|g| g.goods.goods_id).collect();
        Event::default()
            .event("room")
            .json_data(room)
            .unwrap_or_else(|_| Event::default().comment("unencodable room"))
    }

    async fn reread(&mut self) {
        match room_view(&self.nats, self.room_id).await {
            Ok(room) => {
                let event = self.room_event(&room);
                self.ready.push_back(event);
            }
            // The next change or keep-alive goes on; the client re-reads on reconnect.
            Err(problem) => tracing::warn!(room_id = %self.room_id, detail = %problem.detail,
                "could not re-read a room for its viewers"),
        }
    }

    /// The next event, or `None` when the server stops or the hub is gone.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Some(event);
            }
            let change = tokio::select! {
                _ = &mut self.stopping => return None,
                change = self.changes.recv() => change,
            };
            match change {
                Ok(Change::Stock(stock)) if self.goods.contains(&stock.goods_id) => {
                    let event = Event::default().event("stock").json_data(stock).ok()?;
                    return Some(event);
                }
                Ok(Change::Room(room_id)) if room_id == self.room_id => self.reread().await,
                Ok(_) => {}
                Err(RecvError::Lagged(_)) => self.reread().await,
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

/// One event of the stream as OpenAPI 3.1 describes an event stream's schema: each event
/// is an object with its `event` name and its `data` text, here JSON of a [`RoomView`]
/// (`room`) or a [`StockChanged`] (`stock`). [`event_data_schemas`] adds which.
pub struct RoomEvent;

impl utoipa::PartialSchema for RoomEvent {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        let event = |name: &str, what: &str| {
            ObjectBuilder::new()
                .property(
                    "event",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .enum_values(Some([name])),
                )
                .required("event")
                .property(
                    "data",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .content_media_type("application/json")
                        .description(Some(what)),
                )
                .required("data")
        };
        OneOfBuilder::new()
            .item(event(
                "room",
                "the room as GET /v1/rooms/{room_id} returns it",
            ))
            .item(event(
                "stock",
                "{goods_id, available} of one of the room's goods",
            ))
            .into()
    }
}

impl utoipa::ToSchema for RoomEvent {}

/// The schemas of the events' `data` (`contentSchema`, which utoipa cannot write), added to
/// the rendered document.
pub fn event_data_schemas(doc: &mut serde_json::Value) {
    let schema = &mut doc["paths"]["/v1/rooms/{room_id}/events"]["get"]["responses"]["200"]
        ["content"]["text/event-stream"]["schema"];
    let event = match schema.get("$ref").and_then(|r| r.as_str()) {
        Some(reference) => {
            let name = reference.rsplit('/').next().unwrap_or_default().to_owned();
            &mut doc["components"]["schemas"][name]
        }
        None => schema,
    };
    let Some(events) = event.get_mut("oneOf").and_then(|e| e.as_array_mut()) else {
        return;
    };
    use utoipa::ToSchema;
    for (event, name) in events
        .iter_mut()
        .zip([RoomView::name(), StockChanged::name()])
    {
        event["properties"]["data"]["contentSchema"] =
            serde_json::json!({"$ref": format!("#/components/schemas/{name}")});
    }
}

/// Live changes of a room: `room` events (the whole room, first at once) and `stock` events.
#[utoipa::path(get, operation_id = "room_events", path = "/v1/rooms/{room_id}/events", tag = "storefront",
    params(("room_id" = inline(crate::views::RoomIdInPath), Path)),
    responses((status = 200, content_type = "text/event-stream", body = RoomEvent,
        description = "event `room`: the room as GET /v1/rooms/{room_id} returns it; event `stock`: {goods_id, available}"),
        (status = "4XX", body = crate::problem::ProblemBody, content_type = "application/problem+json"),
        (status = "5XX", body = crate::problem::ProblemBody, content_type = "application/problem+json")))]
pub async fn room_events(
    State(state): State<AppState>,
    Path(room_id): Path<RoomId>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Problem> {
    // Subscribe before the first read, so no change between the two is lost.
    let changes = state.hub.subscribe();
    let room = room_view(&state.nats, room_id).await?;
    let mut viewer = Viewer {
        nats: state.nats.clone(),
        room_id,
        goods: HashSet::new(),
        changes,
        stopping: Box::pin(state.drain.stopped()),
        ready: VecDeque::new(),
        _open: state.drain.stream(),
    };
    let first = viewer.room_event(&room);
    viewer.ready.push_back(first);
    let stream = futures::stream::unfold(viewer, |mut viewer| async move {
        let event = viewer.next().await?;
        Some((Ok(event), viewer))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(state.settings.keep_alive)))
}
