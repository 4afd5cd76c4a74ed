//! The live-room page (`/`, `/rooms/{room_id}`): one HTML file with its script, embedded
//! in the binary. The page reads the room id from its path; in dev mode it also gets the
//! payment secret, for its "pay (dev)" button.

use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use shop_contracts::RoomId;

use crate::extract::Path;
use crate::problem::Problem;
use crate::state::AppState;

const PAGE: &str = include_str!("../../assets/room.html");
const CONFIG_MARK: &str = "/*GATEWAY_CONFIG*/null";

fn page(state: &AppState) -> Response {
    let dev_secret = state
        .settings
        .dev_mode
        .then(|| {
            state
                .settings
                .payment
                .secret
                .as_ref()
                .map(|s| s.expose().to_owned())
        })
        .flatten();
    let config = serde_json::json!({ "dev_payment_secret": dev_secret });
    // `</` cannot occur in JSON produced from these values except inside the secret; escape
    // it anyway so the config can never end the script element.
    let config = config.to_string().replace("</", "<\\/");
    let html = PAGE.replacen(CONFIG_MARK, &config, 1);
    ([(header::CACHE_CONTROL, "no-store")], Html(html)).into_response()
}

/// The live-room page of room 1.
#[utoipa::path(get, operation_id = "home_page", path = "/", tag = "pages",
    responses((status = 200, content_type = "text/html", body = String)))]
pub async fn home(State(state): State<AppState>) -> Response {
    page(&state)
}

/// The live-room page of a room.
#[utoipa::path(get, operation_id = "room_page", path = "/rooms/{room_id}", tag = "pages",
    params(("room_id" = inline(crate::views::RoomIdInPath), Path)),
    responses((status = 200, content_type = "text/html", body = String),
        (status = "4XX", body = crate::problem::ProblemBody, content_type = "application/problem+json")))]
pub async fn room(
    State(state): State<AppState>,
    Path(_room_id): Path<RoomId>,
) -> Result<Response, Problem> {
    Ok(page(&state))
}
