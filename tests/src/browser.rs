//! A real headless chromium for the page tests, driven over WebDriver: a chromedriver of
//! the test's own on a free port, one browser session with a fresh profile, and nothing that
//! outlives the test (chromedriver runs in a process group of its own, killed as a whole when
//! the [`Browser`] is dropped, so a failed test leaves no chromium behind).
//!
//! chromedriver and chromium are Debian's `chromium-driver` and `chromium`, which `./dev test`
//! installs. When they are absent the test fails and says so: a page test that skips itself
//! would pass on exactly the machines where nobody looked.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::wd::Capabilities;
use fantoccini::{Client, ClientBuilder};
use serde_json::{json, Value};
use shop_devstack::free_port;

use crate::stack::stack;

/// The flags of every session. Without the background-networking ones chromium keeps
/// calling home (updates, safe browsing, sync), which a closed network answers with nothing
/// but delays and noise; a fresh profile per session keeps tests from sharing state.
const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,860",
];

/// One browser session; chromedriver and chromium die with it.
pub struct Browser {
    pub client: Client,
    driver: Child,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole group: chromedriver and the chromium processes it started.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .status();
        let _ = self.driver.wait();
    }
}

/// `SHOP_TEST_<name>`, else the first of `defaults` that exists; panics when none does.
fn binary(name: &str, defaults: &[&str], package: &str) -> PathBuf {
    let var = format!("SHOP_TEST_{name}");
    if let Some(path) = std::env::var_os(&var) {
        return PathBuf::from(path);
    }
    defaults
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!(
                "{} not found (looked at {defaults:?}; set {var} to point elsewhere): install \
                 Debian's {package} package (./dev test does); the live-room page tests need a \
                 real browser and do not skip without one",
                name.to_lowercase()
            )
        })
}

impl Browser {
    /// Starts chromedriver and one headless chromium session.
    pub async fn start() -> Browser {
        let driver_bin = binary(
            "CHROMEDRIVER",
            &["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"],
            "chromium-driver",
        );
        let chromium = binary(
            "CHROMIUM",
            &["/usr/bin/chromium", "/usr/lib/chromium/chromium"],
            "chromium",
        );
        let port = free_port().expect("a free port");
        let dir = stack().dir.join(format!("browser-{port}"));
        std::fs::create_dir_all(&dir).expect("creating the browser directory");
        let log = std::fs::File::create(dir.join("chromedriver.log")).expect("chromedriver log");
        let mut command = Command::new(&driver_bin);
        command
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log);
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let driver = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", driver_bin.display()));
        // The driver is owned before the session is waited for, so a failure kills it too.
        let mut browser = PendingDriver(Some(driver));
        let client = connect_when_up(port, &chromium, &dir.join("profile")).await;
        Browser {
            client,
            driver: browser.0.take().expect("the driver"),
        }
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// The page as a PNG.
    pub async fn screenshot(&self) -> Vec<u8> {
        self.client.screenshot().await.expect("a screenshot")
    }
}

/// A chromedriver whose session is not open yet: killed (with its group) if opening fails.
struct PendingDriver(Option<Child>);

impl Drop for PendingDriver {
    fn drop(&mut self) {
        if let Some(mut driver) = self.0.take() {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", driver.id())])
                .status();
            let _ = driver.wait();
        }
    }
}

/// Waits until chromedriver answers, then opens a session (with up to 30 s for both). The
/// last error is in the panic, so a browser that cannot start says why.
async fn connect_when_up(port: u16, chromium: &Path, profile: &Path) -> Client {
    let mut capabilities = Capabilities::new();
    let mut args: Vec<String> = FLAGS.iter().map(|f| f.to_string()).collect();
    args.push(format!("--user-data-dir={}", profile.display()));
    capabilities.insert("browserName".into(), json!("chrome"));
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({ "binary": chromium, "args": args }),
    );
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let error = match ClientBuilder::new(connector)
            .capabilities(capabilities.clone())
            .connect(&url)
            .await
        {
            Ok(client) => return client,
            Err(error) => error,
        };
        if Instant::now() >= deadline {
            panic!("no browser session within 30 s: {error}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
