//! The floor's minimal HTTP/1.1: request heads (shared with the WebSocket upgrade) and a
//! keep-alive loop serving `POST /v1/publish` as docs/protocol.md describes.
//!
//! Limitation: only what the load tool sends is understood: `Content-Length` bodies (no
//! chunked requests), no percent-decoding, no `Expect: 100-continue`. It is a baseline for
//! measurements, not a server to expose.

use std::sync::Arc;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::hub::Hub;

/// Largest request head accepted.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// The protocol's default `limits.max_body_bytes`.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A parsed request line and headers.
#[derive(Debug)]
pub struct RequestHead {
    /// `GET`, `POST`...
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    headers: Vec<(String, String)>,
}

impl RequestHead {
    /// The first value of header `name`, compared without case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The path, without the query.
    pub fn path(&self) -> &str {
        self.target
            .split_once('?')
            .map_or(self.target.as_str(), |(path, _)| path)
    }

    /// The value of query parameter `name`.
    pub fn query(&self, name: &str) -> Option<&str> {
        let (_, query) = self.target.split_once('?')?;
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
    }
}

/// A TCP connection with the bytes read past the current request.
pub struct Conn {
    /// The socket; moves into the WebSocket session after an upgrade.
    pub stream: TcpStream,
    /// Read but not yet consumed.
    pub buffer: Vec<u8>,
}

impl Conn {
    /// Reads one request head; `Ok(None)` when the peer closed between requests.
    pub async fn read_head(&mut self) -> Result<Option<RequestHead>, String> {
        loop {
            if let Some(end) = self.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = parse_head(&self.buffer[..end])?;
                self.buffer.drain(..end + 4);
                return Ok(Some(head));
            }
            if self.buffer.len() > MAX_HEAD_BYTES {
                return Err(format!("request head over {MAX_HEAD_BYTES} bytes"));
            }
            let read = self
                .stream
                .read_buf(&mut self.buffer)
                .await
                .map_err(|e| e.to_string())?;
            if read == 0 {
                return if self.buffer.is_empty() {
                    Ok(None)
                } else {
                    Err("connection closed inside a request head".into())
                };
            }
        }
    }

    async fn read_body(&mut self, length: usize) -> Result<Vec<u8>, String> {
        while self.buffer.len() < length {
            let read = self
                .stream
                .read_buf(&mut self.buffer)
                .await
                .map_err(|e| e.to_string())?;
            if read == 0 {
                return Err("connection closed inside a request body".into());
            }
        }
        Ok(self.buffer.drain(..length).collect())
    }

    async fn respond(&mut self, status: u16, body: &Value) -> std::io::Result<()> {
        let reason = match status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            413 => "Payload Too Large",
            _ => "Error",
        };
        let body = body.to_string();
        let response = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.stream.write_all(response.as_bytes()).await
    }
}

fn parse_head(bytes: &[u8]) -> Result<RequestHead, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "request head is not UTF-8".to_string())?;
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(_version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(format!("bad request line {request_line:?}"));
    };
    let headers = lines
        .map(|line| {
            line.split_once(':')
                .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
                .ok_or_else(|| format!("bad header line {line:?}"))
        })
        .collect::<Result<_, _>>()?;
    Ok(RequestHead {
        method: method.to_owned(),
        target: target.to_owned(),
        headers,
    })
}

fn error_body(code: &str, message: &str) -> Value {
    json!({"error": {"code": code, "message": message}})
}

/// Serves requests on `conn` until the peer closes, starting with `head`.
pub async fn serve(mut conn: Conn, mut head: RequestHead, hub: Arc<Hub>) {
    loop {
        let length = match head.header("content-length").map(str::parse::<usize>) {
            None => 0,
            Some(Ok(length)) => length,
            Some(Err(_)) => {
                let _ = conn
                    .respond(400, &error_body("invalid_request", "bad content-length"))
                    .await;
                return;
            }
        };
        if length > MAX_BODY_BYTES {
            let message = format!("the body is {length} bytes; the limit is {MAX_BODY_BYTES}");
            let _ = conn
                .respond(413, &error_body("payload_too_large", &message))
                .await;
            return;
        }
        let Ok(body) = conn.read_body(length).await else {
            return;
        };

        let (status, answer) = route(&head, &body, &hub);
        if conn.respond(status, &answer).await.is_err() {
            return;
        }
        if head
            .header("connection")
            .is_some_and(|c| c.eq_ignore_ascii_case("close"))
        {
            return;
        }
        head = match conn.read_head().await {
            Ok(Some(next)) => next,
            Ok(None) | Err(_) => return,
        };
    }
}

fn route(head: &RequestHead, body: &[u8], hub: &Hub) -> (u16, Value) {
    match (head.method.as_str(), head.path()) {
        ("POST", "/v1/publish") => publish(body, hub),
        (_, "/v1/publish") => (
            405,
            error_body("method_not_allowed", "/v1/publish only accepts POST"),
        ),
        (_, path) => (
            404,
            error_body("not_found", &format!("no endpoint at {path}")),
        ),
    }
}

fn publish(body: &[u8], hub: &Hub) -> (u16, Value) {
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return (400, error_body("invalid_json", "the body is not JSON"));
    };
    let author = match &request["author"] {
        Value::Null => None,
        Value::String(author) => Some(author.as_str()),
        _ => {
            return (
                400,
                error_body("invalid_request", "author must be a string or null"),
            )
        }
    };
    let tags: Option<Vec<&str>> = request["tags"].as_array().and_then(|tags| {
        tags.iter()
            .map(|t| t.as_str().filter(|t| !t.is_empty()))
            .collect()
    });
    let Some(tags) = tags else {
        return (
            400,
            error_body(
                "invalid_request",
                "tags must be an array of non-empty strings",
            ),
        );
    };

    hub.publish(author, &tags);
    (200, json!({"tags": tags}))
}
