//! `GET /v1/rooms/{room_id}/events`: Server-Sent Events for one room. The first event is
//! the whole room (`room`); then `stock` `{goods_id, available}` for the room's goods and
//! `room` again whenever the room changes (or when this viewer fell behind and may have
//! missed something). Keep-alive comments hold idle connections open; every stream ends
//! when the server stops, so shutdown does not wait for viewers.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::json;
use shop_contracts::stock::StockChanged;
use shop_contracts::{GoodsId, RoomId};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_util::sync::WaitForCancellationFutureOwned;

use crate::events::{frame, Change};
use crate::extract::Path;
use crate::problem::Problem;
use crate::routes::goods::room_view;
use crate::shutdown::Running;
use crate::state::AppState;
use crate::views::RoomView;

/// The `Retry-After` of a stream refused because the gateway holds `gateway.max_event_streams`:
/// a place frees only when a viewer leaves, so a crowd of refused viewers asking again every
/// second would only cost them and the gateway more refusals.
const FULL_RETRY_AFTER: Duration = Duration::from_secs(5);

/// A keep-alive: an SSE comment, which clients ignore.
const KEEP_ALIVE: &[u8] = b":\n\n";

/// What one open stream holds for its whole life, kept small: it is paid once per viewer.
struct Viewer {
    state: AppState,
    room_id: RoomId,
    /// The room's goods, sorted: the stock events this viewer is sent.
    goods: Box<[GoodsId]>,
    changes: broadcast::Receiver<Change>,
    stopping: std::pin::Pin<Box<WaitForCancellationFutureOwned>>,
    keep_alive: Interval,
    /// The room event to send next (the first one, or one re-read after a room change).
    ready: Option<Bytes>,
    /// Counts this stream as open until it ends.
    _open: Running,
}

impl Viewer {
    fn room_event(&mut self, room: &RoomView) -> Bytes {
        let mut goods: Vec<GoodsId> = room.goods.iter().map(|g| g.goods.goods_id).collect();
        goods.sort_unstable();
        self.goods = goods.into_boxed_slice();
        frame("room", room)
    }

    async fn reread(&mut self) {
        match room_view(&self.state.nats, self.room_id).await {
            Ok(room) => self.ready = Some(self.room_event(&room)),
            // The next change or keep-alive goes on; the client re-reads on reconnect.
            Err(problem) => tracing::warn!(room_id = %self.room_id, detail = %problem.detail,
                "could not re-read a room for its viewers"),
        }
    }

    /// The next frame to write, or `None` when the server stops or the hub is gone.
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            if let Some(event) = self.ready.take() {
                self.keep_alive.reset();
                return Some(event);
            }
            let change = tokio::select! {
                _ = &mut self.stopping => return None,
                _ = self.keep_alive.tick() => return Some(Bytes::from_static(KEEP_ALIVE)),
                change = self.changes.recv() => change,
            };
            match change {
                Ok(Change::Stock { goods_id, frame })
                    if self.goods.binary_search(&goods_id).is_ok() =>
                {
                    self.keep_alive.reset();
                    return Some(frame);
                }
                // Boxed: the re-read's state (two NATS requests) is large and rarely needed,
                // and inline it would be part of every stream's state all the time.
                Ok(Change::Room(room_id)) if room_id == self.room_id => {
                    Box::pin(self.reread()).await
                }
                Ok(_) => {}
                Err(RecvError::Lagged(_)) => Box::pin(self.reread()).await,
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
/// Past `gateway.max_event_streams` open streams a new one is refused at once (503).
#[utoipa::path(get, operation_id = "room_events", path = "/v1/rooms/{room_id}/events", tag = "storefront",
    params(("room_id" = inline(crate::views::RoomIdInPath), Path)),
    responses((status = 200, content_type = "text/event-stream", body = RoomEvent,
        description = "event `room`: the room as GET /v1/rooms/{room_id} returns it; event `stock`: {goods_id, available}"),
        (status = "4XX", body = crate::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 503, body = crate::problem::ProblemBody, content_type = "application/problem+json",
            description = "`unavailable`: this gateway holds its maximum of event streams (`gateway.max_event_streams`), or the room could not be read",
            headers(("Retry-After" = u64, description = "seconds to wait before opening the stream again"))),
        (status = "5XX", body = crate::problem::ProblemBody, content_type = "application/problem+json")))]
pub async fn room_events(
    State(state): State<AppState>,
    Path(room_id): Path<RoomId>,
) -> Result<Response, Problem> {
    let max = state.settings.max_event_streams;
    // Admission first: a refused viewer costs no request to the workers.
    let Some(open) = state.drain.stream(max) else {
        let mut problem = Problem::unavailable(format!(
            "this gateway already holds its maximum of {max} event streams; try again later"
        ))
        .with_retry_after(FULL_RETRY_AFTER);
        problem.details.insert(
            "retry_after_ms".into(),
            json!(FULL_RETRY_AFTER.as_millis() as u64),
        );
        return Err(problem);
    };
    // Subscribe before the first read, so no change between the two is lost.
    let changes = state.hub.subscribe();
    let room = room_view(&state.nats, room_id).await?;
    let period = state.settings.keep_alive;
    let mut keep_alive = tokio::time::interval_at(Instant::now() + period, period);
    keep_alive.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut viewer = Viewer {
        stopping: Box::pin(state.drain.stopped()),
        state,
        room_id,
        goods: Box::default(),
        changes,
        keep_alive,
        ready: None,
        _open: open,
    };
    viewer.ready = Some(viewer.room_event(&room));
    drop(room);
    let frames = futures::stream::unfold(viewer, |mut viewer| async move {
        let frame = viewer.next().await?;
        Some((Ok::<_, Infallible>(frame), viewer))
    });
    let mut response = Body::from_stream(frames).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}
