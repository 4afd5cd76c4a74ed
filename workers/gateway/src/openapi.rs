//! The OpenAPI 3.1 document, derived from the handlers' `#[utoipa::path]` and the contract
//! types' schemas (`shop-contracts` feature `openapi`).

use axum::body::Bytes;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// What the document says beyond its paths: the title, the bearer scheme and the schemas no
/// route names (the routes add their own operations as they are registered).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "shop HTTP API",
        description = "The storefront, admin and payment API of the live-stream shop (CONTRACT section 7). \
Errors are application/problem+json with the contract's `code` and `details`.",
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

/// The document before any route is registered.
pub fn base() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The finished document as served, rendered once when the routes are registered (a
/// sub-state of the application: `GET /openapi.json` needs nothing else).
#[derive(Clone)]
pub struct Document(pub Bytes);

impl Document {
    pub fn new(openapi: &serde_json::Value) -> Document {
        Document(Bytes::from(
            serde_json::to_vec_pretty(openapi).unwrap_or_default(),
        ))
    }
}
