//! What one bench create is: one unit of one goods, picked round-robin from the bench
//! goods, for one of a thousand users; request `n` of a run is always the same create, so
//! every measurement of a run (the system and each ceiling) does the same work.

use std::ops::Range;

use serde_json::{json, Value};

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
    pub fn body(self) -> impl Fn(u64) -> Value + Send + Sync + Copy + 'static {
        move |n| {
            json!({"user_id": Creates::user_of(n),
                   "items": [{"goods_id": self.goods_of(n), "quantity": 1}],
                   "address": "1 Bench St", "receiver_name": "Bench", "receiver_phone": "555-0100"})
        }
    }
}
