//! Fuzzing of every request decoder (issue 12, point 5): random bytes, random JSON and
//! near-valid objects (the type's own field names with random values) through
//! `shop_kit::decode` for the request type of every subject. A decoder may accept or refuse;
//! it must never panic, and a refusal is always a `bad_request` with a message.
//!
//! Pure and in-process: 1000 cases per type, 19 000 in all, a few seconds in a debug build.
//! `PROPTEST_RNG_SEED=<n>` fixes the inputs; a failing input is written to
//! `decode_fuzz.regressions` beside this file and replayed first from then on.

use proptest::prelude::*;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use shop_contracts::{goods, order, stock, txn, ErrorCode};
use shop_kit::decode;

/// Decodes `body` as `T`: no panic (proptest catches one and fails), and a refusal is a
/// `bad_request` whose message says something.
fn check<T: DeserializeOwned>(body: &[u8]) -> Result<(), TestCaseError> {
    if let Err(error) = decode::<T>(body) {
        prop_assert_eq!(error.code, ErrorCode::BadRequest);
        prop_assert!(!error.message.is_empty());
        prop_assert!(error.details.is_empty() || error.details.contains_key("limit_bytes"));
    }
    Ok(())
}

/// Every field name of every request body, so random objects often hit a real field.
const FIELDS: &[&str] = &[
    "goods_id",
    "goods_ids",
    "category_id",
    "title",
    "brief",
    "brand_name",
    "code",
    "price_cents",
    "market_price_cents",
    "status",
    "head_imgs",
    "videos",
    "detail",
    "after_id",
    "limit",
    "room_id",
    "current_goods_id",
    "available",
    "order_sn",
    "items",
    "quantity",
    "user_id",
    "address",
    "receiver_name",
    "receiver_phone",
    "note",
    "idempotency_key",
    "amount_cents",
    "payment_ref",
    "before_sn",
    "reason",
    "pay_deadline",
];

/// Numbers at and around every limit of the contract (ids < 2^53, quantity 1..=10000,
/// limit 1..=100), plus the extremes of i64/u64/f64.
fn edgy_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop::sample::select(vec![
            -1i64,
            0,
            1,
            2,
            99,
            100,
            101,
            9_999,
            10_000,
            10_001,
            (1 << 53) - 1,
            1 << 53,
            i64::MAX,
            i64::MIN,
        ])
        .prop_map(Value::from),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        edgy_number(),
        ".{0,12}".prop_map(Value::String),
        // Decimal strings: order_sn is a string of digits.
        "-?[0-9]{0,21}".prop_map(Value::String),
        prop::sample::select(vec![
            "on_sale",
            "off_sale",
            "aborted",
            "closed",
            "cancelled",
            ""
        ])
        .prop_map(|s| Value::String(s.to_owned())),
    ]
}

fn json() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(FIELDS), inner), 0..6).prop_map(|fields| {
                Value::Object(
                    fields
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v))
                        .collect::<Map<_, _>>(),
                )
            }),
        ]
    })
}

/// Bodies of every kind: raw bytes, JSON of any shape, JSON objects of known fields, and
/// valid JSON cut short or with a byte flipped.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        json().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        prop::collection::vec((prop::sample::select(FIELDS), json()), 0..8).prop_map(|fields| {
            let object: Map<String, Value> =
                fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            serde_json::to_vec(&object).unwrap()
        }),
        (json(), any::<prop::sample::Index>(), any::<u8>()).prop_map(|(v, at, byte)| {
            let mut bytes = serde_json::to_vec(&v).unwrap();
            if !bytes.is_empty() {
                let i = at.index(bytes.len());
                if byte % 2 == 0 {
                    bytes.truncate(i);
                } else {
                    bytes[i] = byte;
                }
            }
            bytes
        }),
    ]
}

/// One property per subject, each over the same bodies.
macro_rules! fuzz_decoders {
    ($($name:ident => $ty:ty;)*) => {
        proptest! {
            #![proptest_config(ProptestConfig {
                cases: 1000,
                failure_persistence: Some(Box::new(
                    proptest::test_runner::FileFailurePersistence::WithSource("regressions"),
                )),
                ..ProptestConfig::default()
            })]
            $(
                #[test]
                fn $name(body in body()) {
                    check::<$ty>(&body)?;
                }
            )*
        }
    };
}

fuzz_decoders! {
    goods_upsert => goods::UpsertGoods;
    goods_detail => goods::GoodsDetailRequest;
    goods_batch => goods::GoodsBatchRequest;
    goods_list => goods::GoodsListRequest;
    goods_room_set => goods::RoomSetRequest;
    goods_room_list => goods::RoomListRequest;
    stock_set => stock::StockSetRequest;
    stock_get => stock::StockGetRequest;
    stock_deduct => stock::DeductRequest;
    stock_return => stock::ReturnRequest;
    stock_sell_detail => stock::SellDetailRequest;
    order_create => order::CreateOrderRequest;
    order_pay => order::PayRequest;
    order_cancel => order::CancelRequest;
    order_get => order::GetOrderRequest;
    order_list => order::ListOrdersRequest;
    stock_rollback_event => txn::RollbackEvent;
    order_txn_half_message => txn::HalfMessage;
    order_timer_deadline => txn::PayDeadline;
}

/// Bodies over the 64 KiB limit are refused by size, before any parsing.
#[test]
fn oversized_bodies_are_refused_by_size() {
    let big = format!("{{\"order_sn\":\"{}\"}}", "1".repeat(64 * 1024));
    let error = decode::<stock::ReturnRequest>(big.as_bytes()).unwrap_err();
    assert_eq!(error.code, ErrorCode::BadRequest);
    assert!(error.details.contains_key("limit_bytes"));
}
