//! Event streams answered on the socket itself, without hyper's HTTP/1 connection. This
//! module owns a connection's first request: reading it, deciding who answers it, and, when
//! it is an event stream's `GET`, writing the router's response by hand.
//!
//! Why: an event stream is a response that never ends, so whatever its connection holds is
//! held per viewer for as long as the viewer watches. hyper keeps two 8 KiB buffers for each
//! connection (the read buffer a request is parsed from, and the buffer a response head is
//! written into), allocated at that size with no option to make them smaller; with 19,000
//! viewers they were most of the 13.6 KiB a stream cost. Here the head is read into a buffer
//! that is dropped once the request is parsed, the response head is written from a buffer
//! dropped once it is sent, and each event goes from the hub's shared buffer straight to the
//! socket (the events ready together in one vectored write), so an open stream holds its
//! socket and the stream's own state, nothing else: 2.7 KiB per stream at 19,000 viewers
//! (docs/performance.md, "Viewers").
//!
//! What stays hyper's: everything but the first request of a connection when it is
//! `GET /v1/rooms/{room_id}/events` over HTTP/1.1 with no body, nothing pipelined behind it
//! and no `Connection` option but keep-alive. Any other first request, a head that is
//! malformed or larger than [`MAX_HEAD`], and every request after the first, go to hyper as
//! before (so does the rest of a connection that closes inside its first head), with the bytes read so far put back in front ([`crate::rewind`]). The
//! response is always the router's: the same layers (CORS, the in-flight count, problem+json,
//! the cap's 503 with `Retry-After`) make it; only its framing on the wire is written here,
//! as hyper writes it (status line, the headers, `date`, `content-length` when the body's
//! size is known, else `transfer-encoding: chunked`). After a response whose body ends, the
//! connection goes on with hyper.

use std::io::{self, IoSlice, Write as _};

use axum::body::{Body, HttpBody as _};
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, Uri, Version};
use axum::response::Response;
use axum::Router;
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tower::ServiceExt;

/// The largest first-request head read here (hyper's own first read buffer is as large); a
/// larger one is hyper's to answer.
pub const MAX_HEAD: usize = 8 * 1024;

/// Headers of a head parsed here; a head with more is hyper's.
const MAX_HEADERS: usize = 64;

/// How every request line this module answers begins.
const EVENTS_PREFIX: &[u8] = b"GET /v1/rooms/";

/// Who answers a connection's first request.
pub enum First {
    /// An event stream's request, parsed: answered here ([`answer`]).
    Events(Box<Request>),
    /// Anything else: hyper serves the connection, first given the bytes read.
    Hyper(Bytes),
    /// The client closed the connection before sending anything.
    Closed,
}

/// Reads a connection's first request far enough to know who answers it. Nothing is read
/// (and no buffer taken) until the client has sent something.
pub async fn first_request(tcp: &TcpStream) -> io::Result<First> {
    let mut read: Vec<u8> = Vec::new();
    loop {
        tcp.readable().await?;
        if read.capacity() == read.len() {
            read.reserve_exact(if read.is_empty() { 2048 } else { read.len() });
        }
        match tcp.try_read_buf(&mut read) {
            Ok(0) if read.is_empty() => return Ok(First::Closed),
            // Closed in the middle of a head: hyper answers it as it would have.
            Ok(0) => return Ok(First::Hyper(read.into())),
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
            Err(error) => return Err(error),
        }
        match decide(&read) {
            Decision::MoreNeeded if read.len() < MAX_HEAD => {}
            Decision::MoreNeeded | Decision::Hyper => return Ok(First::Hyper(read.into())),
            Decision::Events(request) => return Ok(First::Events(request)),
        }
    }
}

enum Decision {
    MoreNeeded,
    Hyper,
    Events(Box<Request>),
}

/// Whether the bytes read so far are a whole event-stream request this module answers.
fn decide(read: &[u8]) -> Decision {
    if read.len() < EVENTS_PREFIX.len() {
        return match EVENTS_PREFIX.starts_with(read) {
            true => Decision::MoreNeeded,
            false => Decision::Hyper,
        };
    }
    if !read.starts_with(EVENTS_PREFIX) {
        return Decision::Hyper;
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Request::new(&mut headers);
    match head.parse(read) {
        Ok(httparse::Status::Partial) => Decision::MoreNeeded,
        // Pipelined requests behind it are hyper's to queue.
        Ok(httparse::Status::Complete(len)) if len == read.len() => match request(&head) {
            Some(request) => Decision::Events(request),
            None => Decision::Hyper,
        },
        // Malformed (hyper answers 400), too many headers (431), or pipelined.
        _ => Decision::Hyper,
    }
}

/// The request the router is given, as hyper would have built it; `None` when the head asks
/// for something only hyper does (a body, `Expect`, an upgrade, `Connection: close`, an
/// HTTP version other than 1.1) or is not an event stream's path.
fn request(head: &httparse::Request<'_, '_>) -> Option<Box<Request>> {
    if head.version != Some(1) || head.method != Some("GET") {
        return None;
    }
    let target = head.path?;
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    if !path.ends_with("/events") {
        return None;
    }
    let mut headers = HeaderMap::with_capacity(head.headers.len());
    for h in head.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        let value = HeaderValue::from_bytes(h.value).ok()?;
        let hyper_only = name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || name == header::EXPECT
            || name == header::UPGRADE
            || (name == header::CONNECTION
                && !value.as_bytes().eq_ignore_ascii_case(b"keep-alive"));
        if hyper_only {
            return None;
        }
        headers.append(name, value);
    }
    let mut request = Request::new(Body::empty());
    *request.method_mut() = Method::GET;
    *request.uri_mut() = Uri::try_from(target).ok()?;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    Some(Box::new(request))
}

/// What the connection does once [`answer`] is done.
pub enum After {
    /// The response ended and the connection may carry more requests: hyper serves them.
    Hyper,
    /// The connection is done (a write failed: the viewer left; or the body broke).
    Close,
}

/// Answers `request` with `app`'s response, written on `tcp` as hyper would frame it.
pub async fn answer(tcp: &mut TcpStream, app: &Router, request: Box<Request>) -> After {
    let Ok(response) = app.clone().oneshot(*request).await;
    match write_response(tcp, response).await {
        Ok(after) => after,
        Err(error) => {
            tracing::trace!(%error, "connection ended with an error");
            After::Close
        }
    }
}

async fn write_response(tcp: &mut TcpStream, response: Response) -> io::Result<After> {
    let (parts, body) = response.into_parts();
    let exact = body.size_hint().exact();
    let mut head = Vec::with_capacity(256);
    write!(
        head,
        "HTTP/1.1 {} {}\r\n",
        parts.status.as_str(),
        parts.status.canonical_reason().unwrap_or("")
    )?;
    for (name, value) in &parts.headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    if !parts.headers.contains_key(header::DATE) {
        // hyper's format (RFC 9110's IMF-fixdate).
        write!(
            head,
            "date: {}\r\n",
            chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S GMT")
        )?;
    }
    let framed = parts.headers.contains_key(header::CONTENT_LENGTH)
        || parts.headers.contains_key(header::TRANSFER_ENCODING);
    let Some(length) = exact else {
        if !framed {
            head.extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
        head.extend_from_slice(b"\r\n");
        drop(parts);
        tcp.write_all(&head).await?;
        drop(head);
        return stream_chunks(tcp, body).await;
    };
    if !framed {
        write!(head, "content-length: {length}\r\n")?;
    }
    head.extend_from_slice(b"\r\n");
    drop(parts);
    // A body of known size is small here (a problem): one write with the head.
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .map_err(io::Error::other)?;
    head.extend_from_slice(&body);
    tcp.write_all(&head).await?;
    Ok(After::Hyper)
}

/// Frames written in one system call at most, and their bytes: a viewer that fell behind
/// catches up in a few writes (IOV_MAX is 1024 slices).
const BATCH_FRAMES: usize = 64;
const BATCH_BYTES: usize = 64 * 1024;

/// Writes the data frames of `body` as chunks straight from the frames' buffers (for a stock
/// event, the hub's buffer that every viewer shares), then the last chunk. The frames that
/// are ready together go out as one chunk in one vectored write, as hyper queues the chunks
/// ready together into one write: with 19,000 viewers each sent about 100 events a second,
/// one system call per event left the gateway seconds behind (measured: change to last
/// viewer p50 10 s against hyper's 0.4 s).
async fn stream_chunks(tcp: &mut TcpStream, body: Body) -> io::Result<After> {
    let mut frames = body.into_data_stream();
    while let Some(frame) = frames.next().await {
        let Ok(first) = frame else {
            // As hyper does with a body that fails: the response is cut, not ended.
            return Ok(After::Close);
        };
        // More that is ready now, without waiting (a stream may be polled again after it
        // said it was not ready: the frame it was making is not lost). Allocated only when
        // there is more, and dropped after the write: no buffer stays with the connection.
        let mut more: Vec<Bytes> = Vec::new();
        let mut len = first.len();
        let mut end = None;
        while more.len() < BATCH_FRAMES && len < BATCH_BYTES {
            match frames.next().now_or_never() {
                Some(Some(Ok(data))) => {
                    len += data.len();
                    more.push(data);
                }
                Some(Some(Err(_))) => {
                    end = Some(After::Close);
                    break;
                }
                Some(None) => {
                    end = Some(After::Hyper);
                    break;
                }
                None => break,
            }
        }
        // An empty chunk would be read as the last one.
        if len > 0 {
            write_chunk(tcp, len, &first, &more).await?;
        }
        match end {
            Some(After::Hyper) => break,
            Some(After::Close) => return Ok(After::Close),
            None => {}
        }
    }
    tcp.write_all(b"0\r\n\r\n").await?;
    Ok(After::Hyper)
}

/// One chunk of `len` bytes: `first`, then `more`.
async fn write_chunk(
    tcp: &mut TcpStream,
    len: usize,
    first: &[u8],
    more: &[Bytes],
) -> io::Result<()> {
    let mut size = [0u8; 18];
    let size_len = {
        let mut cursor = &mut size[..];
        write!(cursor, "{len:X}\r\n")?;
        18 - cursor.len()
    };
    let head = IoSlice::new(&size[..size_len]);
    let tail = IoSlice::new(b"\r\n");
    if more.is_empty() {
        // The usual case, one event: no allocation.
        return write_all_vectored(tcp, &mut [head, IoSlice::new(first), tail]).await;
    }
    let mut slices = Vec::with_capacity(more.len() + 3);
    slices.push(head);
    slices.push(IoSlice::new(first));
    slices.extend(more.iter().map(|data| IoSlice::new(data)));
    slices.push(tail);
    write_all_vectored(tcp, &mut slices).await
}

async fn write_all_vectored(tcp: &mut TcpStream, mut slices: &mut [IoSlice<'_>]) -> io::Result<()> {
    while !slices.is_empty() {
        let written = tcp.write_vectored(slices).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut slices, written);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(head: &[u8], expected: &str) {
        let got = match decide(head) {
            Decision::MoreNeeded => "more",
            Decision::Hyper => "hyper",
            Decision::Events(_) => "events",
        };
        assert_eq!(got, expected, "{}", String::from_utf8_lossy(head));
    }

    #[test]
    fn only_a_whole_plain_event_stream_get_is_answered_here() {
        check(b"", "more");
        check(b"GET /v1/ro", "more");
        check(b"POST /v1/orders HTTP/1.1\r\n", "hyper");
        check(b"GET /v1/goods/1 HTTP/1.1\r\n\r\n", "hyper");
        check(b"GET /v1/rooms/3/events HTTP/1.1\r\nHost: x\r\n", "more");
        check(
            b"GET /v1/rooms/3/events HTTP/1.1\r\nHost: x\r\n\r\n",
            "events",
        );
        check(
            b"GET /v1/rooms/3/events?x=1 HTTP/1.1\r\nConnection: Keep-Alive\r\n\r\n",
            "events",
        );
        check(b"GET /v1/rooms/3 HTTP/1.1\r\n\r\n", "hyper");
        check(b"GET /v1/rooms/3/events HTTP/1.0\r\n\r\n", "hyper");
        check(
            b"GET /v1/rooms/3/events HTTP/1.1\r\nConnection: close\r\n\r\n",
            "hyper",
        );
        check(
            b"GET /v1/rooms/3/events HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            "hyper",
        );
        check(
            b"GET /v1/rooms/3/events HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n",
            "hyper",
        );
        check(
            b"GET /v1/rooms/3/events HTTP/1.1\r\nBad Header\r\n\r\n",
            "hyper",
        );
        check(b"GET /v1/rooms/3/ev\x00ents HTTP/1.1\r\n\r\n", "hyper");
    }
}
