//! A TCP proxy between a worker and nats-server that a test can cut, stall or slow: the
//! network faults of issue 12, point 3, without touching the host's network.
//!
//! - cut: every connection through it is closed at once, and new ones are refused until
//!   [`Proxy::heal`] (the worker sees its server vanish and reconnects);
//! - stall: connections stay open but no byte moves in either direction (a frozen link);
//! - slow: every chunk waits the given delay before it is forwarded.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// How the proxy treats traffic now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    Up,
    Cut,
    Stalled,
    Slow(Duration),
}

pub struct Proxy {
    port: u16,
    link: watch::Sender<Link>,
    /// Every forwarding task, so a cut can end them all.
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream` (`host:port`).
    pub async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the proxy");
        let port = listener.local_addr().expect("the proxy's port").port();
        let (link, watch) = watch::channel(Link::Up);
        let tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let accepted = tasks.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if *watch.borrow() == Link::Cut {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                let mut tasks = accepted.lock().expect("proxy tasks");
                tasks.push(tokio::spawn(pump(client_read, server_write, watch.clone())));
                tasks.push(tokio::spawn(pump(server_read, client_write, watch.clone())));
            }
        });
        Proxy { port, link, tasks }
    }

    /// `nats://127.0.0.1:<port>`: the URL to give the worker instead of the server's.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Closes every connection and refuses new ones until [`Proxy::heal`].
    pub fn cut(&self) {
        self.link.send_replace(Link::Cut);
        for task in self.tasks.lock().expect("proxy tasks").drain(..) {
            task.abort();
        }
    }

    /// Keeps connections open but moves no byte until [`Proxy::heal`].
    pub fn stall(&self) {
        self.link.send_replace(Link::Stalled);
    }

    /// Delays every chunk by `delay` until [`Proxy::heal`].
    pub fn slow(&self, delay: Duration) {
        self.link.send_replace(Link::Slow(delay));
    }

    pub fn heal(&self) {
        self.link.send_replace(Link::Up);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
    }
}

/// Copies `from` to `to` as the link allows.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut link: watch::Receiver<Link>,
) {
    let mut buffer = vec![0; 64 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Hold the chunk while the link is stalled; give up when it is cut.
        loop {
            let now = *link.borrow_and_update();
            match now {
                Link::Up => break,
                Link::Cut => return,
                Link::Slow(delay) => {
                    tokio::time::sleep(delay).await;
                    break;
                }
                Link::Stalled => {
                    if link.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}
