//! The routes of CONTRACT section 7, one module per resource, and the one table that
//! registers them: each handler goes in once, with its `#[utoipa::path]` entry
//! (utoipa-axum's `routes!`), so the router serves exactly the paths the OpenAPI document
//! lists.

pub mod admin;
pub mod docs;
pub mod events;
pub mod goods;
pub mod health;
pub mod orders;
pub mod pages;
pub mod payments;

use axum::Router;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::openapi::{self, Document};
use crate::state::AppState;

/// Every route of the gateway, each with its operation in the document.
pub fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::base())
        .routes(routes!(goods::room))
        .routes(routes!(events::room_events))
        .routes(routes!(goods::detail))
        .routes(routes!(goods::list))
        .routes(routes!(orders::create, orders::list))
        .routes(routes!(orders::get))
        .routes(routes!(orders::cancel))
        .routes(routes!(payments::callback))
        .routes(routes!(admin::create_goods))
        .routes(routes!(admin::update_goods))
        .routes(routes!(admin::set_stock))
        .routes(routes!(admin::set_room))
        .routes(routes!(docs::openapi_json))
        .routes(routes!(docs::page))
        .routes(routes!(health::live))
        .routes(routes!(health::ready))
        .routes(routes!(pages::home))
        .routes(routes!(pages::room))
}

/// The router and the document it serves at `/openapi.json`.
pub fn build() -> (Router<AppState>, Document) {
    let (router, openapi) = api().split_for_parts();
    let mut json = serde_json::to_value(&openapi).unwrap_or_default();
    events::event_data_schemas(&mut json);
    (router, Document::new(&json))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The document lists the routes of CONTRACT section 7 and the pages, nothing else, each
    /// with a unique operationId (the router is made from the same registrations).
    #[test]
    fn the_document_lists_every_route_of_the_contract() {
        let (_, Document(json)) = build();
        let doc: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let mut documented = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                if ["get", "put", "post", "delete", "patch", "head", "options"]
                    .contains(&method.as_str())
                {
                    documented.insert((method.clone(), path.clone()));
                }
            }
        }
        let expected: BTreeSet<(String, String)> = [
            ("get", "/v1/rooms/{room_id}"),
            ("get", "/v1/rooms/{room_id}/events"),
            ("get", "/v1/goods/{goods_id}"),
            ("get", "/v1/goods"),
            ("post", "/v1/orders"),
            ("get", "/v1/orders"),
            ("get", "/v1/orders/{order_sn}"),
            ("post", "/v1/orders/{order_sn}/cancel"),
            ("post", "/v1/payments/callback"),
            ("post", "/v1/admin/goods"),
            ("put", "/v1/admin/goods/{goods_id}"),
            ("put", "/v1/admin/stock/{goods_id}"),
            ("put", "/v1/admin/rooms/{room_id}"),
            ("get", "/openapi.json"),
            ("get", "/docs"),
            ("get", "/healthz"),
            ("get", "/readyz"),
            ("get", "/"),
            ("get", "/rooms/{room_id}"),
        ]
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
        assert_eq!(documented, expected);
        let ids: Vec<&str> = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|item| item.as_object().unwrap().values())
            .filter_map(|op| op["operationId"].as_str())
            .collect();
        let unique: BTreeSet<&str> = ids.iter().copied().collect();
        assert_eq!(
            ids.len(),
            unique.len(),
            "operationIds must be unique: {ids:?}"
        );
        assert_eq!(
            ids.len(),
            expected.len(),
            "every operation has an operationId"
        );
    }
}
