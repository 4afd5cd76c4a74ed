//! The HTTP connections: accepting them, serving each with hyper under the settings that
//! keep an idle event stream cheap, and the graceful stop (stop accepting, let every
//! connection finish the request it serves). This module owns what a connection costs the
//! process while it is open; the routes and layers are [`crate::app`]'s. A connection whose
//! first request is an event stream's is answered by [`crate::direct`] instead, without a
//! hyper connection, until that response ends.
//!
//! Why not `axum::serve`: it builds the service of each new connection by calling
//! `Router::with_state(())` on a clone of the router, which turns every route and every
//! layer on it into fresh boxed services: about 34 KiB per connection for this router
//! (heaptrack of 5,000 event streams: 170 MB of 333 MB), held for the connection's life. Here
//! the router is prepared once and each connection gets a clone of it (one `Arc`). And
//! `axum::serve` has no way to set hyper's options; see [`builder`].

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::Router;
use bytes::Bytes;
use hyper::server::conn::http1::Builder;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tower::ServiceExt;

use crate::direct::{self, After, First};
use crate::rewind::Rewind;
use crate::shutdown::Drain;

/// hyper's connection settings: HTTP/1.1, as `axum::serve` served it (the gateway does not
/// enable axum's `http2`).
///
/// `half_close`: by default hyper, while a response is still being written, reads the socket
/// to notice a client that went away, and that read grows the connection's read buffer from
/// the 8 KiB the request was read into to 16 KiB (a second `reserve` while the request head
/// still shares the first buffer). An event stream is a response that never ends, so every
/// viewer paid those 8 KiB. With half-close allowed hyper does not read mid-response: a
/// viewer that left is noticed when a write to it fails, at the latest on the second
/// keep-alive comment (`gateway.keep_alive`), which also frees its slot under
/// `gateway.max_event_streams`.
fn builder() -> Builder {
    let mut builder = Builder::new();
    builder.half_close(true);
    builder
}

/// Serves `app` on `listener` until `stop` resolves; then stops accepting, asks each
/// connection to finish the request it serves and close, and returns once all have closed
/// (the caller bounds that wait with `gateway.shutdown_timeout`).
pub async fn serve(listener: TcpListener, app: Router, drain: Drain) {
    // Every route is turned into its final service once, here, not per connection.
    let app: Router = app.with_state(());
    let builder = Arc::new(builder());
    let mut connections = JoinSet::new();
    let mut stop = std::pin::pin!(drain.stopped());
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            // Reap finished connections as they end, so the set holds only open ones.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            _ = &mut stop => break,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(error) => {
                if !is_connection_error(&error) {
                    // Out of file descriptors or similar: accepting again at once would spin.
                    tracing::error!(%error, "accepting a connection failed; retrying in 1s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                continue;
            }
        };
        // Responses go out as soon as they are written: with Nagle's algorithm a response
        // that leaves in two writes waits for the client's delayed ACK (up to 40 ms).
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
        connections.spawn(connection(tcp, app.clone(), builder.clone(), drain.clone()));
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// One connection: its first request is read here, and answered on the socket when it is an
/// event stream ([`direct`]); hyper serves everything else, the rest of a connection whose
/// first request was answered here included.
async fn connection(mut tcp: TcpStream, app: Router, builder: Arc<Builder>, drain: Drain) {
    let first = tokio::select! {
        first = direct::first_request(&tcp) => first,
        // No whole request yet: nothing to finish, as hyper closes an idle connection.
        _ = drain.stopped() => return,
    };
    let prefix = match first {
        Ok(First::Events(request)) => match direct::answer(&mut tcp, &app, request).await {
            After::Hyper => Bytes::new(),
            After::Close => return,
        },
        Ok(First::Hyper(prefix)) => prefix,
        Ok(First::Closed) => return,
        Err(error) => return tracing::trace!(%error, "connection ended with an error"),
    };
    // Boxed: hyper's connection state is large, and inline it would be part of every
    // connection's task, the event streams' answered above included.
    Box::pin(with_hyper(Rewind::new(prefix, tcp), app, &builder, drain)).await;
}

async fn with_hyper(io: Rewind, app: Router, builder: &Builder, drain: Drain) {
    let service = TowerToHyperService::new(
        app.map_request(|request: Request<hyper::body::Incoming>| request.map(Body::new)),
    );
    let connection = builder.serve_connection(TokioIo::new(io), service);
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => return log_end(result),
        _ = drain.stopped() => connection.as_mut().graceful_shutdown(),
    }
    log_end(connection.await);
}

fn log_end(result: Result<(), hyper::Error>) {
    if let Err(error) = result {
        tracing::trace!(%error, "connection ended with an error");
    }
}

/// Errors of one connection that the listener itself survives (as `axum::serve` treats them).
fn is_connection_error(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// Raises this process's soft limit on open files to its hard limit, as nats-server does:
/// every connection is a file descriptor, and the usual soft limit (1024) would refuse
/// viewers long before `gateway.max_event_streams`. Returns the soft limit in force.
#[allow(unsafe_code)] // two libc calls on a struct owned here
pub fn raise_open_files_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            limit = raised;
        }
    }
    Ok(limit.rlim_cur)
}
