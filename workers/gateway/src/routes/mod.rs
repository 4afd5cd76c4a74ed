//! The routes of CONTRACT section 7, one module per resource, and the table that registers
//! them: every route goes through [`Routes`], which records its method and path, so the
//! OpenAPI test can compare the router with the document.

pub mod admin;
pub mod docs;
pub mod events;
pub mod goods;
pub mod health;
pub mod orders;
pub mod pages;
pub mod payments;

use axum::handler::Handler;
use axum::routing::{get, post, put};
use axum::Router;

use crate::state::AppState;

/// A router that remembers what was registered.
pub struct Routes {
    router: Router<AppState>,
    table: Vec<(&'static str, &'static str)>,
}

macro_rules! method {
    ($name:ident, $verb:literal) => {
        fn $name<H, T>(mut self, path: &'static str, handler: H) -> Self
        where
            H: Handler<T, AppState>,
            T: 'static,
        {
            self.router = self.router.route(path, $name(handler));
            self.table.push(($verb, path));
            self
        }
    };
}

impl Routes {
    method!(get, "get");
    method!(post, "post");
    method!(put, "put");

    /// Every route of the gateway.
    pub fn all() -> Routes {
        Routes {
            router: Router::new(),
            table: Vec::new(),
        }
        .get("/v1/rooms/{room_id}", goods::room)
        .get("/v1/rooms/{room_id}/events", events::room_events)
        .get("/v1/goods/{goods_id}", goods::detail)
        .get("/v1/goods", goods::list)
        .post("/v1/orders", orders::create)
        .get("/v1/orders", orders::list)
        .get("/v1/orders/{order_sn}", orders::get)
        .post("/v1/orders/{order_sn}/cancel", orders::cancel)
        .post("/v1/payments/callback", payments::callback)
        .post("/v1/admin/goods", admin::create_goods)
        .put("/v1/admin/goods/{goods_id}", admin::update_goods)
        .put("/v1/admin/stock/{goods_id}", admin::set_stock)
        .put("/v1/admin/rooms/{room_id}", admin::set_room)
        .get("/openapi.json", docs::openapi_json)
        .get("/docs", docs::page)
        .get("/healthz", health::live)
        .get("/readyz", health::ready)
        .get("/", pages::home)
        .get("/rooms/{room_id}", pages::room)
    }

    /// `(method, path)` of every registered route, methods in lower case.
    pub fn table(&self) -> &[(&'static str, &'static str)] {
        &self.table
    }

    pub fn into_router(self) -> Router<AppState> {
        self.router
    }
}
