//! The OpenAPI document and the page that renders it, both from the binary (no CDN).

use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};

use crate::openapi::Document;

/// The OpenAPI 3.1 document of this API.
#[utoipa::path(get, operation_id = "openapi_document", path = "/openapi.json", tag = "docs",
    responses((status = 200, content_type = "application/json", body = Object)))]
pub async fn openapi_json(State(Document(json)): State<Document>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], json).into_response()
}

/// A page that renders the document, with its script embedded (works offline).
#[utoipa::path(get, operation_id = "docs_page", path = "/docs", tag = "docs",
    responses((status = 200, content_type = "text/html", body = String)))]
pub async fn page() -> Html<&'static str> {
    Html(include_str!("../../assets/docs.html"))
}
