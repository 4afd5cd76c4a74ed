//! The soak's buyers: each creates an order, then pays it, cancels it, or leaves it to close
//! at its deadline, over and over, counting every answer by its contract code.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use shop_contracts::endpoint::{OrderCancel, OrderCreate, OrderPay};
use shop_contracts::order::{CancelRequest, PayRequest};
use shop_contracts::Endpoint;
use shop_kit::client::{request, request_json, CallError};

/// Longer than a worker's own request timeout: an answer that does not come is a timeout.
const TIMEOUT: Duration = Duration::from_secs(8);

/// What the buyers saw.
#[derive(Default)]
pub struct Tally {
    created: AtomicU64,
    paid: AtomicU64,
    cancelled: AtomicU64,
    /// `<subject> <code>` (or `<subject> no answer`) → how many.
    refused: Mutex<BTreeMap<String, u64>>,
}

impl Tally {
    pub fn created(&self) -> u64 {
        self.created.load(Ordering::Relaxed)
    }

    pub fn paid(&self) -> u64 {
        self.paid.load(Ordering::Relaxed)
    }

    pub fn cancelled(&self) -> u64 {
        self.cancelled.load(Ordering::Relaxed)
    }

    fn refused(&self, subject: &str, error: &CallError) {
        let what = match error {
            CallError::Refused(detail) => detail.code.as_str().to_owned(),
            CallError::NoAnswer { .. } => "no answer".to_owned(),
            CallError::BadReply { .. } => "bad reply".to_owned(),
        };
        *self
            .refused
            .lock()
            .expect("tally")
            .entry(format!("{subject} {what}"))
            .or_default() += 1;
    }

    pub fn to_json(&self) -> Value {
        json!({
            "created": self.created(),
            "paid": self.paid(),
            "cancelled": self.cancelled(),
            "refused": *self.refused.lock().expect("tally"),
        })
    }
}

/// One buyer, until `stop` is set.
pub async fn buyer(
    client: async_nats::Client,
    id: usize,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) {
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let goods_id = 1 + (n + id as u64) % 10;
        let create = json!({
            "user_id": 1 + id as u64 * 1_000_000 + n,
            "items": [{"goods_id": goods_id, "quantity": 1 + n % 2}],
            "address": "1 Soak St", "receiver_name": "Soak", "receiver_phone": "555-0100",
        });
        let order = match request_json::<OrderCreate>(&client, create, TIMEOUT).await {
            Ok(order) => order,
            Err(error) => {
                tally.refused(OrderCreate::SUBJECT, &error);
                // Back off a little while the system is away.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        tally.created.fetch_add(1, Ordering::Relaxed);
        let order_sn = order.order_sn;
        match n % 10 {
            0..=3 => {
                let pay = PayRequest {
                    order_sn,
                    amount_cents: order.total_cents,
                    payment_ref: None,
                };
                match request::<OrderPay>(&client, &pay, TIMEOUT).await {
                    Ok(_) => {
                        tally.paid.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(error) => tally.refused(OrderPay::SUBJECT, &error),
                }
            }
            4..=5 => {
                match request::<OrderCancel>(&client, &CancelRequest { order_sn }, TIMEOUT).await {
                    Ok(_) => {
                        tally.cancelled.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(error) => tally.refused(OrderCancel::SUBJECT, &error),
                }
            }
            _ => {}
        }
    }
}
