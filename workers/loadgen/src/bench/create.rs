//! What one bench create is: one unit of one goods, picked round-robin from the bench
//! goods, for one of a thousand users; request `n` of a run is always the same create, so
//! every measurement of a run (the system and each ceiling) does the same work.

use std::ops::Range;

use shop_contracts::order::CreateOrderRequest;
use shop_contracts::stock::OrderLine;
use shop_contracts::{GoodsId, ItemList, Quantity, ShortText, UserId};

/// Users the creates are spread over.
pub const USERS: u64 = 1000;

#[derive(Debug, Clone, Copy)]
pub struct Creates {
    pub first_goods_id: i64,
    /// How many goods: 1 is one hot goods.
    pub goods: i64,
}

impl Creates {
    pub fn goods_ids(self) -> Range<i64> {
        self.first_goods_id..self.first_goods_id + self.goods
    }

    pub fn goods_of(self, n: u64) -> i64 {
        self.first_goods_id + (n % self.goods.unsigned_abs()) as i64
    }

    pub fn user_of(n: u64) -> i64 {
        1 + (n % USERS) as i64
    }

    /// The `order.create` body of request `n`.
    pub fn body(self) -> impl Fn(u64) -> CreateOrderRequest + Send + Sync + Copy + 'static {
        move |n| self.request(n)
    }

    fn request(self, n: u64) -> CreateOrderRequest {
        // Every bench upserts its goods before it creates, so each id is a valid GoodsId.
        let goods_id = GoodsId::new(self.goods_of(n)).expect("a bench goods id is a GoodsId");
        let line = OrderLine {
            goods_id,
            quantity: Quantity::new(1).expect("1 is a quantity"),
        };
        let text = |s: &str| ShortText::new(s.to_owned()).expect("a short text");
        CreateOrderRequest {
            user_id: UserId::new(Creates::user_of(n)).expect("users are 1..=1000"),
            items: ItemList::new(vec![line]).expect("one line"),
            address: text("1 Bench St"),
            receiver_name: text("Bench"),
            receiver_phone: text("555-0100"),
            note: None,
            idempotency_key: None,
        }
    }
}
