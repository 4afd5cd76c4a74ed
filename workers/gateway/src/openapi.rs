//! The OpenAPI 3.1 document, derived from the handlers' `#[utoipa::path]` and the contract
//! types' schemas (`shop-contracts` feature `openapi`).

use std::sync::OnceLock;

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "shop HTTP API",
        description = "The storefront, admin and payment API of the live-stream shop (CONTRACT section 7). \
Errors are application/problem+json with the contract's `code` and `details`.",
    ),
    paths(
        routes::goods::room, routes::events::room_events, routes::goods::detail,
        routes::goods::list, routes::orders::create, routes::orders::list, routes::orders::get,
        routes::orders::cancel, routes::payments::callback, routes::admin::create_goods,
        routes::admin::update_goods, routes::admin::set_stock, routes::admin::set_room,
        routes::docs::openapi_json, routes::docs::page, routes::health::live,
        routes::health::ready, routes::pages::home, routes::pages::room,
    ),
    components(schemas(
        shop_contracts::ErrorCode, shop_contracts::stock::StockChanged, shop_contracts::PageLimit,
    )),
    modifiers(&BearerAuth),
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "sub = user id (decimal string), exp required, role \"admin\" for /v1/admin",
                    ))
                    .build(),
            ),
        );
    }
}

pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document as served (built once).
pub fn document_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| document().to_pretty_json().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Every route the router has is in the document, and the reverse.
    #[test]
    fn the_document_and_the_router_list_the_same_routes() {
        let router: BTreeSet<(String, String)> = routes::Routes::all()
            .table()
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        let doc: serde_json::Value = serde_json::from_str(document_json()).unwrap();
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
        assert_eq!(router, documented);
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
    }
}
