//! TLS and credentials in production (issue 12, point 6): `nats-config/production.conf`
//! refuses plain clients, the three workers create an order over TLS in production mode, a
//! worker refuses to start in production mode without TLS or with a development password,
//! and no secret (NATS password, database password, gateway keys) reaches a log line or an
//! error message. Certificates are made at run time with `rcgen`; nothing secret is committed.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use serde_json::json;
use shop_tests::stack::{nats_server_binary, project_root, stack};
use shop_tests::{eventually, TestApp, TlsFiles, Worker};

/// A CA, a server certificate for 127.0.0.1 and localhost, and a client certificate, as PEM
/// files in `dir`.
pub fn pki(dir: &Path) -> TlsFiles {
    std::fs::create_dir_all(dir).unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "shop test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = ca.self_signed(&ca_key).unwrap();
    let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "shop test");
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let server = leaf(
        vec!["127.0.0.1".into(), "localhost".into()],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let client = leaf(
        vec!["shop-worker".into()],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let files = TlsFiles {
        ca: dir.join("ca.pem"),
        server_cert: dir.join("server-cert.pem"),
        server_key: dir.join("server-key.pem"),
        client_cert: dir.join("client-cert.pem"),
        client_key: dir.join("client-key.pem"),
    };
    for (path, pem) in [
        (&files.ca, ca.pem()),
        (&files.server_cert, server.0),
        (&files.server_key, server.1),
        (&files.client_cert, client.0),
        (&files.client_key, client.1),
    ] {
        std::fs::write(path, pem).unwrap();
    }
    files
}

fn pki_for(test: &str) -> TlsFiles {
    pki(&stack().dir.join(format!("pki-{test}")))
}

/// The env of a production start-up with TLS and secrets that no default has.
const NATS_SECRET: &str = "nats-pw-Q7x2vK9";
const DB_SECRET: &str = "db-pw-M4t8rZ1";
const JWT_SECRET: &str = "jwt-key-H3n6wP5";
const PAYMENT_SECRET: &str = "pay-key-B9c1yL7";
const SECRETS: [&str; 4] = [NATS_SECRET, DB_SECRET, JWT_SECRET, PAYMENT_SECRET];

/// `text` holds none of [`SECRETS`].
fn assert_no_secret(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "{what} shows a secret:\n{text}");
    }
}

/// A database URL of this test carrying [`DB_SECRET`] (the test cluster trusts loopback,
/// so the password is sent and ignored: the worker runs with it as a deployment would).
fn url_with_db_secret(app: &TestApp, kind: Worker) -> String {
    app.database_url(kind)
        .replacen("://shop@", &format!("://shop:{DB_SECRET}@"), 1)
}

/// nats-server on `nats-config/production.conf` as it is: the passwords and TLS files from
/// the environment, the test's ports and store.
struct ProductionServer {
    child: Child,
    port: u16,
}

impl Drop for ProductionServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_production_server(tls: &TlsFiles, dir: &Path) -> ProductionServer {
    // The file as it is but for its store_dir, which nats-server refuses beside the store
    // directory given on the command line (as ./dev bench does).
    let source = project_root().join("nats-config");
    let conf: String = std::fs::read_to_string(source.join("production.conf"))
        .unwrap()
        .lines()
        .filter(|line| !line.trim_start().starts_with("store_dir:"))
        .map(|line| format!("{line}\n"))
        .collect();
    std::fs::write(dir.join("production.conf"), conf).unwrap();
    std::fs::copy(
        source.join("permissions.conf"),
        dir.join("permissions.conf"),
    )
    .unwrap();
    let port = shop_devstack::free_port().unwrap();
    let log = std::fs::File::create(dir.join("production-nats.log")).unwrap();
    let child = Command::new(nats_server_binary())
        .arg("-c")
        .arg(dir.join("production.conf"))
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(dir.join("production-store"))
        .args(["-m", &shop_devstack::free_port().unwrap().to_string()])
        .env("SHOP_NATS_SERVER_NAME", "shop-tls-test")
        .env("SHOP_NATS_TLS_CERT", &tls.server_cert)
        .env("SHOP_NATS_TLS_KEY", &tls.server_key)
        .env("SHOP_NATS_TLS_CA", &tls.ca)
        .env("SHOP_GOODS_NATS_PASSWORD", NATS_SECRET)
        .env("SHOP_STOCK_NATS_PASSWORD", NATS_SECRET)
        .env("SHOP_ORDER_NATS_PASSWORD", NATS_SECRET)
        .env("SHOP_GATEWAY_NATS_PASSWORD", NATS_SECRET)
        .env("SHOP_ADMIN_NATS_PASSWORD", NATS_SECRET)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("starting nats-server");
    ProductionServer { child, port }
}

/// production.conf refuses a plain client, and takes a TLS client that trusts the CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_conf_requires_tls() {
    let tls = pki_for("production-conf");
    let dir = stack().dir.join("production-conf");
    std::fs::create_dir_all(&dir).unwrap();
    let server = start_production_server(&tls, &dir);
    let url = format!("nats://127.0.0.1:{}", server.port);
    let over_tls = || {
        async_nats::ConnectOptions::with_user_and_password("order".into(), NATS_SECRET.into())
            .require_tls(true)
            .add_root_certificates(tls.ca.clone())
            .connect(url.clone())
    };
    let client = eventually("production nats-server up", Duration::from_secs(30), || {
        let connecting = over_tls();
        async move { connecting.await.ok() }
    })
    .await;
    assert!(client.server_info().tls_required, "the server requires TLS");
    // The same user and password without TLS: refused by the server.
    let plain =
        async_nats::ConnectOptions::with_user_and_password("order".into(), NATS_SECRET.into())
            .connect(url.clone())
            .await;
    assert!(plain.is_err(), "a plain client was let in");
    // A wrong password over TLS: refused too (the passwords come from the environment).
    let wrong = async_nats::ConnectOptions::with_user_and_password("order".into(), "x".into())
        .add_root_certificates(tls.ca.clone())
        .require_tls(true)
        .connect(url)
        .await;
    assert!(wrong.is_err(), "a wrong password was let in");
}

/// The three workers in production mode over TLS (client certificates verified), with
/// distinctive secrets in their config, create an order; then no log line holds a secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_over_tls_in_production_mode_logs_no_secret() {
    let tls = pki_for("create");
    let mut app = TestApp::start_with_own_tls_nats(&[], &[], &tls, NATS_SECRET).await;
    let urls: Vec<(String, String)> = [Worker::Goods, Worker::Stock, Worker::Order]
        .into_iter()
        .map(|kind| {
            (
                format!("SHOP_{}__DATABASE_URL", kind.name().to_uppercase()),
                url_with_db_secret(&app, kind),
            )
        })
        .collect();
    app.env = [
        ("SHOP_MODE", "production"),
        // Debug shows every connect and migration step: none of them may carry a secret.
        ("SHOP_LOG__FILTER", "debug"),
        ("SHOP_GATEWAY__AUTH__HS256_SECRET", JWT_SECRET),
        ("SHOP_GATEWAY__PAYMENT__SECRET", PAYMENT_SECRET),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .chain(urls)
    .collect();
    for kind in [Worker::Goods, Worker::Stock, Worker::Order] {
        app.spawn(kind).await;
    }
    let goods = app
        .ok(
            "goods.upsert",
            json!({"category_id": 1, "title": "tls", "price_cents": 250}),
        )
        .await["goods_id"]
        .as_i64()
        .unwrap();
    app.ok("stock.set", json!({"goods_id": goods, "available": 5}))
        .await;
    let order = app
        .ok(
            "order.create",
            json!({"user_id": 7, "items": [{"goods_id": goods, "quantity": 2}],
                   "address": "1 Main St", "receiver_name": "Ann", "receiver_phone": "555-0100"}),
        )
        .await;
    assert_eq!(order["status"], "unpaid");
    assert_eq!(order["total_cents"], 500);
    let stock = app.ok("stock.get", json!({"goods_ids": [goods]})).await;
    assert_eq!(stock["items"][0]["available"], 3);
    // A bad request and a failing one log their causes too.
    app.err("order.get", json!({"order_sn": "1"}), "not_found")
        .await;
    app.err("stock.deduct", json!({"order_sn": 5}), "bad_request")
        .await;

    let mut logs = String::new();
    for index in 0..3 {
        let worker = app.worker(index);
        worker.kill9();
        logs.push_str(&std::fs::read_to_string(&worker.log).unwrap());
    }
    assert!(
        logs.contains("DEBUG"),
        "the workers logged at debug level:\n{logs}"
    );
    assert_no_secret("the workers' logs", &logs);
}

/// Runs `shop stock` with `env` until it exits by itself; its output (log and error).
async fn refused_start(app: &TestApp, env: &[(&str, &str)]) -> String {
    let mut process = app.spawn_process(Worker::Stock, env);
    assert!(
        process.wait_exit(Duration::from_secs(60)).await,
        "shop stock started with {env:?}"
    );
    std::fs::read_to_string(&process.log).unwrap()
}

/// Production mode refuses each unsafe setting with a message that names the key, and
/// neither that nor a failed connection (NATS, database) shows a secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_refuses_plain_nats_and_dev_passwords_and_no_error_shows_a_secret() {
    let tls = pki_for("refusals");
    let app = TestApp::start_with_own_tls_nats(&[], &[], &tls, NATS_SECRET).await;
    let db = url_with_db_secret(&app, Worker::Stock);
    let production = [
        ("SHOP_MODE", "production"),
        ("SHOP_STOCK__DATABASE_URL", db.as_str()),
        ("SHOP_GATEWAY__AUTH__HS256_SECRET", JWT_SECRET),
        ("SHOP_GATEWAY__PAYMENT__SECRET", PAYMENT_SECRET),
    ];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut env = production.to_vec();
        env.extend_from_slice(extra);
        env
    };
    // No CA configured: NATS would not be TLS. (An empty value unsets the CA, which the
    // test's environment sets.)
    let out = refused_start(
        &app,
        &with(&[
            ("SHOP_NATS__TLS_CA", ""),
            ("SHOP_NATS__TLS_CERT", ""),
            ("SHOP_NATS__TLS_KEY", ""),
        ]),
    )
    .await;
    assert!(
        out.contains("refusing to start in production mode"),
        "{out}"
    );
    assert!(out.contains("nats.tls_ca is not set"), "{out}");
    assert_no_secret("refused start-up (no TLS)", &out);
    // A development NATS password.
    let out = refused_start(&app, &with(&[("SHOP_NATS__PASSWORD", "stock-dev")])).await;
    assert!(
        out.contains("nats.password is a development password"),
        "{out}"
    );
    assert!(!out.contains("stock-dev"), "{out}");
    assert_no_secret("refused start-up (dev NATS password)", &out);
    // A database URL carrying a development password.
    let dev_db = app
        .database_url(Worker::Stock)
        .replacen("://shop@", "://shop:admin-dev@", 1);
    let mut env = with(&[]);
    env.retain(|(k, _)| *k != "SHOP_STOCK__DATABASE_URL");
    env.push(("SHOP_STOCK__DATABASE_URL", dev_db.as_str()));
    let out = refused_start(&app, &env).await;
    assert!(
        out.contains("database_url carries a development password"),
        "{out}"
    );
    assert!(!out.contains("admin-dev"), "{out}");

    // Failures after the checks: a wrong NATS password, then a database that refuses.
    let out = refused_start(&app, &with(&[("SHOP_NATS__PASSWORD", JWT_SECRET)])).await;
    assert!(out.contains("connecting to NATS"), "{out}");
    assert_no_secret("failed NATS connection", &out);
    let closed = shop_devstack::free_port().unwrap();
    // Credentials in the NATS URL itself, and nothing listening there.
    let url = format!("tls://stock:{NATS_SECRET}@127.0.0.1:{closed}");
    let mut env = with(&[]);
    env.push(("SHOP_NATS__URL", url.as_str()));
    let out = refused_start(&app, &env).await;
    assert_no_secret("failed NATS connection (credentials in the URL)", &out);
    assert!(
        out.contains("could not connect to NATS at tls://127.0.0.1:"),
        "{out}"
    );
    let no_db = format!("postgres://shop:{DB_SECRET}@127.0.0.1:{closed}/shop_stock");
    let mut env = with(&[]);
    env.retain(|(k, _)| *k != "SHOP_STOCK__DATABASE_URL");
    env.push(("SHOP_STOCK__DATABASE_URL", no_db.as_str()));
    let out = refused_start(&app, &env).await;
    assert!(out.contains("the stock database"), "{out}");
    assert_no_secret("failed database connection", &out);
}
