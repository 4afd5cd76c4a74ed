//! The load generator's HTTP/1.1 client: a pool of keep-alive connections on which each
//! request is one write and, as a rule, one read.
//!
//! Why not reqwest: on this 2-core box the bench shares the cores with the system it
//! measures, so what its client costs is taken from the gateway's figure. reqwest (a pool
//! behind a lock, a task per connection, channels between them) cost the bench 0.04–0.07 ms
//! per create against 0.02 ms for its NATS client; the gateway's ratio is meant to measure
//! the gateway, not the client library.
//!
//! It speaks only what the gateway answers: a status line, headers, and a body framed by
//! `Content-Length`. A response framed otherwise, or `Connection: close`, or any I/O error
//! drops the connection (the next request opens a new one).

use std::net::SocketAddr;
use std::sync::Mutex;

use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Response headers read at most; the gateway sends about ten.
const MAX_HEADERS: usize = 32;
/// A response head or body larger than this is not the gateway's.
const MAX_RESPONSE_BYTES: usize = 1 << 20;

#[derive(Debug, Error)]
pub enum TransportError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("the server closed the connection before the response was complete")]
    Closed,
    #[error("a response this client does not read: {0}")]
    Unsupported(&'static str),
}

/// A response: status, `Retry-After` in seconds when present, and the body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub retry_after_seconds: Option<u64>,
    pub body: Vec<u8>,
}

/// Keep-alive connections to one server, opened as needed, at most as many as requests
/// were ever in flight at once.
pub struct Pool {
    addr: SocketAddr,
    idle: Mutex<Vec<Connection>>,
}

struct Connection {
    stream: TcpStream,
    /// Bytes read and not yet consumed.
    buffer: Vec<u8>,
}

impl Pool {
    pub fn new(addr: SocketAddr) -> Self {
        Pool {
            addr,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Sends one complete request (head and body, as built by [`request`]) and reads the
    /// response. The connection goes back to the pool only after a complete response.
    pub async fn send(&self, request: &[u8]) -> Result<Response, TransportError> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut connection = match idle {
            Some(connection) => connection,
            None => {
                let stream = TcpStream::connect(self.addr).await?;
                stream.set_nodelay(true)?;
                Connection {
                    stream,
                    buffer: Vec::with_capacity(4096),
                }
            }
        };
        connection.stream.write_all(request).await?;
        let (response, keep_alive) = connection.read_response().await?;
        if keep_alive {
            self.idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(connection);
        }
        Ok(response)
    }
}

/// A `POST` with a JSON body and the given extra header lines (each `Name: value`).
pub fn request(host: &str, path: &str, headers: &[(&str, &[u8])], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + body.len());
    out.extend_from_slice(b"POST ");
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\nContent-Type: application/json\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(body);
    out
}

impl Connection {
    /// Reads one response; `true` with it when the connection may carry the next request.
    async fn read_response(&mut self) -> Result<(Response, bool), TransportError> {
        loop {
            if let Some(head) = parse_head(&self.buffer)? {
                let end = head.length + head.content_length;
                if end > MAX_RESPONSE_BYTES {
                    return Err(TransportError::Unsupported("a body over 1 MiB"));
                }
                while self.buffer.len() < end {
                    self.fill().await?;
                }
                let body = self.buffer[head.length..end].to_vec();
                self.buffer.drain(..end);
                let response = Response {
                    status: head.status,
                    retry_after_seconds: head.retry_after_seconds,
                    body,
                };
                return Ok((response, head.keep_alive));
            }
            if self.buffer.len() > MAX_RESPONSE_BYTES {
                return Err(TransportError::Unsupported("a head over 1 MiB"));
            }
            self.fill().await?;
        }
    }

    async fn fill(&mut self) -> Result<(), TransportError> {
        self.buffer.reserve(4096);
        match self.stream.read_buf(&mut self.buffer).await? {
            0 => Err(TransportError::Closed),
            _ => Ok(()),
        }
    }
}

/// What the head of a response says about it.
#[derive(Debug, PartialEq)]
struct Head {
    /// Bytes of the status line and headers, with the blank line.
    length: usize,
    status: u16,
    content_length: usize,
    retry_after_seconds: Option<u64>,
    keep_alive: bool,
}

/// The head at the start of `bytes`, or `None` when it is not complete yet.
fn parse_head(bytes: &[u8]) -> Result<Option<Head>, TransportError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let length = match response.parse(bytes) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(TransportError::Unsupported("a malformed head")),
    };
    let status = response
        .code
        .ok_or(TransportError::Unsupported("no status"))?;
    let mut content_length = None;
    let mut retry_after_seconds = None;
    let mut keep_alive = response.version == Some(1);
    for header in response.headers.iter() {
        let value = std::str::from_utf8(header.value).ok().map(str::trim);
        if header.name.eq_ignore_ascii_case("content-length") {
            content_length = value.and_then(|v| v.parse::<usize>().ok());
            if content_length.is_none() {
                return Err(TransportError::Unsupported("a bad Content-Length"));
            }
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(TransportError::Unsupported("Transfer-Encoding"));
        } else if header.name.eq_ignore_ascii_case("retry-after") {
            retry_after_seconds = value.and_then(|v| v.parse().ok());
        } else if header.name.eq_ignore_ascii_case("connection") {
            keep_alive = !value.is_some_and(|v| v.eq_ignore_ascii_case("close"));
        }
    }
    Ok(Some(Head {
        length,
        status,
        content_length: content_length.unwrap_or(0),
        retry_after_seconds,
        keep_alive,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_is_read_once_complete() {
        let response =
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\n\
            retry-after: 1\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(parse_head(&response[..20]).unwrap(), None);
        let head = parse_head(response).unwrap().unwrap();
        assert_eq!(
            head,
            Head {
                length: response.len() - 2,
                status: 503,
                content_length: 2,
                retry_after_seconds: Some(1),
                keep_alive: true,
            }
        );
    }

    #[test]
    fn framing_it_does_not_read_is_an_error_and_close_is_honoured() {
        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
        assert!(parse_head(chunked).is_err());
        let closing = b"HTTP/1.1 201 Created\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";
        assert!(!parse_head(closing).unwrap().unwrap().keep_alive);
        assert!(parse_head(b"garbage\r\n\r\n").is_err());
    }

    #[test]
    fn a_request_is_framed_by_its_content_length() {
        let request = request(
            "127.0.0.1:8080",
            "/v1/orders",
            &[("Authorization", b"Bearer t")],
            b"{\"a\":1}",
        );
        let text = String::from_utf8(request).unwrap();
        assert_eq!(
            text,
            "POST /v1/orders HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Type: application/json\r\n\
             Authorization: Bearer t\r\nContent-Length: 7\r\n\r\n{\"a\":1}"
        );
    }
}
