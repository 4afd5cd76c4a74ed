//! A mixed load that keeps running while a test kills and starts processes: clients in a
//! closed loop create an order, then pay it, cancel it or leave it to time out (one in three
//! each), over NATS or over HTTP through the gateway (the payment provider's signed callback
//! pays). The load has a NATS client of its own, so the test keeps `&mut TestApp` to kill
//! and start things while it runs.
//!
//! Every answer is recorded: which creates, pays and cancels were acknowledged (the test
//! checks they all survived, [`check_acknowledged`]) and how every request ended (the test
//! checks callers saw nothing outside what it allows).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use shop_tests::gateway::{signature, token};
use shop_tests::{ask, eventually, Answer, TestApp};
use tokio::task::JoinHandle;

use crate::order::{create_body, sn_of, SETTLE};

/// What the load asked for an acknowledged order after its create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Paid, and the pay was acknowledged.
    Paid,
    /// Cancelled, and the cancel was acknowledged.
    Cancelled,
    /// Left unpaid: it must close at its deadline.
    Left,
    /// A pay or cancel that got no success reply: any end is possible.
    Unknown,
}

#[derive(Debug, Default)]
pub struct Tally {
    /// Every acknowledged create, with what happened to it next.
    pub orders: Vec<(String, Fate)>,
    /// How requests ended: `"order.create ok"`, `"order.pay unavailable"`,
    /// `"order.create timed out"`, ...
    pub answers: BTreeMap<String, usize>,
}

impl Tally {
    /// Answers of `subject` outside `allowed` (`"ok"`, an error code, `"timed out"`, ...).
    pub fn answers_outside(&self, allowed: &[&str]) -> Vec<(&str, usize)> {
        self.answers
            .iter()
            .filter(|(answer, _)| {
                let (_, how) = answer.split_once(' ').unwrap_or_default();
                !allowed.contains(&how)
            })
            .map(|(answer, n)| (answer.as_str(), *n))
            .collect()
    }
}

/// The way the load's requests go: over NATS to the workers, or over HTTP to the gateway at
/// the address a [`Front`] holds now.
#[derive(Clone)]
pub enum Via {
    Nats(async_nats::Client),
    Http(Arc<Front>),
}

/// One request of a load client.
enum Step {
    /// `body` is the `order.create` body; over HTTP its `user_id` comes from the token.
    Create {
        user: i64,
        body: Value,
    },
    /// The `order.pay` body; over HTTP, the payment provider's signed callback.
    Pay {
        body: Value,
    },
    Cancel {
        user: i64,
        sn: String,
    },
}

impl Via {
    /// Sends `step`: what it was (no space in it), how it ended (`ok`, an error code or an
    /// HTTP status, `timed out`, ...), and the reply of a success.
    async fn ask(&self, step: Step, timeout: Duration) -> (&'static str, String, Option<Value>) {
        match self {
            Via::Nats(client) => {
                let (subject, body) = match step {
                    Step::Create { body, .. } => ("order.create", body),
                    Step::Pay { body } => ("order.pay", body),
                    Step::Cancel { sn, .. } => ("order.cancel", json!({"order_sn": sn})),
                };
                let answer = ask(client, subject, &body, timeout).await;
                let how = match &answer {
                    Answer::Reply(Ok(_)) => "ok".to_owned(),
                    Answer::Reply(Err(e)) => e.code().to_owned(),
                    Answer::TimedOut => "timed out".to_owned(),
                    Answer::NoResponders => "no responders".to_owned(),
                    Answer::Failed(_) => "failed".to_owned(),
                };
                let reply = match answer {
                    Answer::Reply(Ok(reply)) => Some(reply),
                    _ => None,
                };
                (subject, how, reply)
            }
            Via::Http(front) => front.ask(step, timeout).await,
        }
    }
}

/// What a load balancer in front of gateways does for the load: one address at a time that
/// new requests go to, which a test switches to a replacement before it stops the old
/// gateway. A request already sent to the old one (on a keep-alive connection, too) stays
/// there.
pub struct Front {
    current: Mutex<String>,
    http: reqwest::Client,
}

impl Front {
    pub fn new(url: &str) -> Arc<Front> {
        Arc::new(Front {
            current: Mutex::new(url.to_owned()),
            http: reqwest::Client::new(),
        })
    }

    /// From now on, new requests go to `url`.
    pub fn switch_to(&self, url: &str) {
        *self.current.lock().unwrap() = url.to_owned();
    }

    async fn ask(&self, step: Step, timeout: Duration) -> (&'static str, String, Option<Value>) {
        let base = self.current.lock().unwrap().clone();
        let (what, request) = match step {
            Step::Create { user, mut body } => {
                body.as_object_mut().unwrap().remove("user_id");
                let request = self.http.post(format!("{base}/v1/orders"));
                (
                    "gateway.create",
                    request.bearer_auth(token(user)).json(&body),
                )
            }
            Step::Pay { mut body } => {
                body["payment_ref"] = json!(format!("psp-{}", body["order_sn"].as_str().unwrap()));
                let raw = serde_json::to_vec(&body).unwrap();
                let request = self
                    .http
                    .post(format!("{base}/v1/payments/callback"))
                    .header("content-type", "application/json")
                    .header("x-signature", signature(&raw))
                    .body(raw);
                ("gateway.pay", request)
            }
            Step::Cancel { user, sn } => {
                let request = self.http.post(format!("{base}/v1/orders/{sn}/cancel"));
                ("gateway.cancel", request.bearer_auth(token(user)))
            }
        };
        let response = match request.timeout(timeout).send().await {
            Ok(response) => response,
            Err(e) if e.is_timeout() => return (what, "timed out".to_owned(), None),
            Err(e) => return (what, format!("failed: {e}"), None),
        };
        let status = response.status();
        match response.json::<Value>().await {
            Ok(reply) if status.is_success() => (what, "ok".to_owned(), Some(reply)),
            Ok(problem) => (
                what,
                format!("{} {}", status.as_u16(), problem["code"]),
                None,
            ),
            Err(e) if e.is_timeout() => (what, "timed out".to_owned(), None),
            Err(e) => (what, format!("{} body failed: {e}", status.as_u16()), None),
        }
    }
}

pub struct MixedLoad {
    stop: Arc<AtomicBool>,
    created: Arc<AtomicUsize>,
    tally: Arc<Mutex<Tally>>,
    clients: Vec<JoinHandle<()>>,
}

impl MixedLoad {
    /// Starts `clients` clients on `client`, each ordering one or two of `goods` per create;
    /// a request unanswered after `timeout` counts as timed out.
    pub fn start(
        client: async_nats::Client,
        goods: Vec<i64>,
        clients: usize,
        timeout: Duration,
    ) -> MixedLoad {
        MixedLoad::start_via(Via::Nats(client), goods, clients, timeout)
    }

    /// [`MixedLoad::start`] through `via`: NATS, or HTTP to the gateway.
    pub fn start_via(via: Via, goods: Vec<i64>, clients: usize, timeout: Duration) -> MixedLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let created = Arc::new(AtomicUsize::new(0));
        let tally = Arc::new(Mutex::new(Tally::default()));
        let next = Arc::new(AtomicUsize::new(0));
        let clients = (0..clients)
            .map(|_| {
                let (via, goods) = (via.clone(), goods.clone());
                let (stop, created, tally, next) =
                    (stop.clone(), created.clone(), tally.clone(), next.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let one = |step: Step| {
                            let (via, tally) = (&via, &tally);
                            async move {
                                let (what, how, reply) = via.ask(step, timeout).await;
                                let mut tally = tally.lock().unwrap();
                                *tally.answers.entry(format!("{what} {how}")).or_default() += 1;
                                reply
                            }
                        };
                        let items = [
                            (goods[i % goods.len()], 1 + (i % 2) as i64),
                            (goods[(i + 1) % goods.len()], 1),
                        ];
                        let user = (i % 50 + 1) as i64;
                        let body = create_body(user, &items);
                        let Some(order) = one(Step::Create { user, body }).await else {
                            continue;
                        };
                        created.fetch_add(1, Ordering::Relaxed);
                        let sn = sn_of(&order);
                        let fate = match i % 3 {
                            0 => {
                                let pay =
                                    json!({"order_sn": sn, "amount_cents": order["total_cents"]});
                                match one(Step::Pay { body: pay }).await {
                                    Some(_) => Fate::Paid,
                                    None => Fate::Unknown,
                                }
                            }
                            1 => match one(Step::Cancel {
                                user,
                                sn: sn.clone(),
                            })
                            .await
                            {
                                Some(_) => Fate::Cancelled,
                                None => Fate::Unknown,
                            },
                            _ => Fate::Left,
                        };
                        tally.lock().unwrap().orders.push((sn, fate));
                    }
                })
            })
            .collect();
        MixedLoad {
            stop,
            created,
            tally,
            clients,
        }
    }

    /// Acknowledged creates so far.
    pub fn created(&self) -> usize {
        self.created.load(Ordering::Relaxed)
    }

    /// Waits until `more` creates beyond those acknowledged now are acknowledged.
    pub async fn wait_for_more(&self, more: usize, what: &str) {
        let want = self.created() + more;
        eventually(
            &format!("{more} more creates {what}"),
            SETTLE,
            || async move { (self.created() >= want).then_some(()) },
        )
        .await;
    }

    /// Stops the clients once their requests in flight are answered or time out.
    pub async fn stop(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        for client in self.clients {
            client.await.expect("a load client panicked");
        }
        Arc::try_unwrap(self.tally)
            .expect("the clients are done")
            .into_inner()
            .unwrap()
    }
}

/// Every acknowledged create, pay and cancel survived, once the system has settled: the
/// order is in the database with the status its fate demands (a left order closed), its
/// `created` event and the event of its end are in ORDER_EVENTS, and a closed or cancelled
/// order's rollback is in STOCK_ROLLBACK with that reason. Also: no order_sn was issued twice.
pub async fn check_acknowledged(app: &TestApp, tally: &Tally) {
    let sns: HashSet<&str> = tally.orders.iter().map(|(sn, _)| sn.as_str()).collect();
    assert_eq!(
        sns.len(),
        tally.orders.len(),
        "an order_sn was acknowledged twice"
    );
    let mut statuses: HashMap<String, String> = HashMap::new();
    for orders in app.order_dbs().await {
        statuses.extend(
            sqlx::query_as::<_, (i64, String)>("SELECT order_sn, status FROM orders")
                .fetch_all(&orders)
                .await
                .unwrap()
                .into_iter()
                .map(|(sn, status)| (sn.to_string(), status)),
        );
    }
    let js = app.jetstream();
    let events = js.get_stream("ORDER_EVENTS").await.unwrap();
    let rollbacks = js.get_stream("STOCK_ROLLBACK").await.unwrap();
    for (sn, fate) in &tally.orders {
        let status = statuses
            .get(sn)
            .unwrap_or_else(|| panic!("acknowledged order {sn} is not in the database"));
        let expected: &[&str] = match fate {
            Fate::Paid => &["paid"],
            Fate::Cancelled => &["cancelled"],
            Fate::Left => &["closed"],
            Fate::Unknown => &["paid", "cancelled", "closed"],
        };
        assert!(
            expected.contains(&status.as_str()),
            "order {sn} ({fate:?}) is {status}"
        );
        for kind in ["created", status.as_str()] {
            let subject = format!("order.events.{sn}.{kind}");
            if let Err(e) = events.get_last_raw_message_by_subject(&subject).await {
                panic!("acknowledged order {sn}: no {kind} event in ORDER_EVENTS ({e})");
            }
        }
        if matches!(status.as_str(), "closed" | "cancelled") {
            let subject = format!("stock.rollback.{sn}");
            let rollback = rollbacks
                .get_last_raw_message_by_subject(&subject)
                .await
                .unwrap_or_else(|e| panic!("{status} order {sn}: no rollback ({e})"));
            let event: Value = serde_json::from_slice(&rollback.payload).unwrap();
            assert_eq!(event["reason"], status.as_str(), "rollback of {sn}");
        }
    }
}

/// `shop audit` with nothing in flight: it judges everything, and must find nothing.
pub fn audit_passes(app: &TestApp) {
    let audit = app.run_shop(&["audit", "--grace", "0s"]);
    assert!(
        audit.status.success(),
        "shop audit found problems:\n{}\n{}",
        String::from_utf8_lossy(&audit.stdout),
        String::from_utf8_lossy(&audit.stderr)
    );
}

/// Waits until every unpaid order has closed (the checker has run past every deadline).
pub async fn wait_unpaid_closed(app: &TestApp) {
    eventually("all unpaid orders to close", SETTLE, || async {
        let unpaid = app
            .order_count("SELECT count(*) FROM orders WHERE status = 'unpaid'")
            .await;
        (unpaid == 0).then_some(())
    })
    .await;
}
