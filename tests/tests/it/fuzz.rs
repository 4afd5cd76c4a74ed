//! Live fuzz (issue 12, point 5): random payloads to every subject of the three running
//! workers. Each answer must be a contract reply (a JSON object, or an error with both headers
//! and a body whose code is one of the contract's and whose status matches it), and the
//! workers must still be there and serving at the end (CONTRACT section 6, invariant 6). The
//! decoders themselves are fuzzed in-process with many more cases in
//! `workers/kit/tests/decode_fuzz.rs`.

use futures::future::join_all;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serde_json::{json, Map, Value};
use shop_contracts::subjects;
use shop_tests::{TestApp, Worker};

const PER_SUBJECT: usize = 150;

const FIELDS: &[&str] = &[
    "goods_id",
    "goods_ids",
    "category_id",
    "title",
    "price_cents",
    "status",
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
    "amount_cents",
    "limit",
    "after_id",
    "before_sn",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-2i64..12).prop_map(Value::from),
        ".{0,8}".prop_map(Value::String),
        "[0-9]{1,20}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(FIELDS), inner), 0..5).prop_map(|f| {
                Value::Object(
                    f.into_iter()
                        .map(|(k, v)| (k.to_owned(), v))
                        .collect::<Map<_, _>>(),
                )
            }),
        ]
    })
}

fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..48),
        json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_payloads_to_every_subject_get_contract_errors_and_the_workers_live() {
    let app = TestApp::start(&[Worker::Goods, Worker::Stock, Worker::Order]).await;
    let all = [
        subjects::goods::UPSERT,
        subjects::goods::DETAIL,
        subjects::goods::BATCH,
        subjects::goods::LIST,
        subjects::goods::ROOM_SET,
        subjects::goods::ROOM_LIST,
        subjects::stock::SET,
        subjects::stock::GET,
        subjects::stock::DEDUCT,
        subjects::stock::RETURN,
        subjects::stock::SELL_DETAIL,
        subjects::order::CREATE,
        subjects::order::PAY,
        subjects::order::CANCEL,
        subjects::order::GET,
        subjects::order::LIST,
    ];
    // Deterministic: the same payloads on every run.
    let mut runner = TestRunner::deterministic();
    let strategy = payload();
    let mut errors = 0;
    for subject in all {
        let payloads: Vec<Vec<u8>> = (0..PER_SUBJECT)
            .map(|_| strategy.new_tree(&mut runner).unwrap().current())
            .collect();
        for chunk in payloads.chunks(25) {
            // `request_raw` panics on a reply that is not a contract reply.
            let answers = join_all(chunk.iter().map(|p| app.request_raw(subject, p.clone()))).await;
            for (answer, sent) in answers.into_iter().zip(chunk) {
                match answer {
                    Ok(body) => assert!(
                        body.is_object(),
                        "{subject} {:?}: {body}",
                        String::from_utf8_lossy(sent)
                    ),
                    Err(e) => {
                        errors += 1;
                        assert_eq!(
                            e.status,
                            e.body.error.code.status().to_string(),
                            "{subject}: {e:?}"
                        );
                        assert!(!e.message.is_empty(), "{subject}: {e:?}");
                        assert!(
                            e.code() != "internal",
                            "{subject} {:?}: {e:?}",
                            String::from_utf8_lossy(sent)
                        );
                    }
                }
            }
        }
    }
    assert!(errors > all.len() * PER_SUBJECT / 2, "only {errors} errors");
    // Every worker is still there and serves.
    for kind in [Worker::Goods, Worker::Stock, Worker::Order] {
        app.wait_for_workers(kind, 1).await;
    }
    app.ok("stock.set", json!({"goods_id": 1, "available": 1}))
        .await;
    app.ok("goods.list", json!({})).await;
}
