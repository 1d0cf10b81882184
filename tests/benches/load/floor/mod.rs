//! The floor: the least a server must do for the tagcast protocol, written directly on
//! tokio-tungstenite, to put tagcast's figures in proportion. It runs as this binary
//! re-executed with `floor-server`, in its own process like tagcast.
//!
//! It accepts `/ws?user=X`, answers subscribe and unsubscribe frames with acks and errors
//! as docs/protocol.md says, keeps an index tag → connections (hub.rs) and routes each
//! publish of `POST /v1/publish` to the subscribers that are not the author's, one
//! `outdated` frame per change listing the tags each tracks, merged when a reader lags.
//! One task per connection (after a short-lived handshake task), small tungstenite buffers,
//! nodelay sockets, frames serialized straight from borrowed tags: lean, but not a
//! strawman, and written without tricks tagcast could not use.
//!
//! Limitation: no pings, no idle timeout and no per-user connection limit. Runs last
//! seconds, and the load tool sets tagcast's per-user limit above its load, so none of them
//! is exercised; a real server pays a little per connection for each (a timer, a counter),
//! which tagcast's figures include and the floor's do not.

mod http;
mod hub;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use self::http::{Conn, RequestHead};
use self::hub::{ConnId, Hub, Outbox, SubscribeError};

/// The protocol's default `limits.max_tag_bytes`.
const MAX_TAG_BYTES: usize = 256;

/// The protocol's default `limits.max_tags_per_connection`.
const MAX_TAGS_PER_CONNECTION: usize = 1_000;

/// The protocol's default `limits.max_frame_bytes`.
const MAX_FRAME_BYTES: usize = 64 * 1024;

/// Small buffers, as a server holding 10,000 mostly idle connections would choose. The read
/// buffer is allocated up front for every connection and only grows for a larger frame: a
/// subscribe frame of a few tags fits in 512 bytes. Server frames are written at once.
fn server_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(512)
        .write_buffer_size(0)
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES))
}

/// Runs the floor until its stdin closes: binds an ephemeral loopback port and announces
/// it on stderr with the same JSON log line tagcast prints.
pub fn main() -> Result<()> {
    // The same runtime as tagcast's `#[tokio::main]`: one worker per core.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(serve())
}

async fn serve() -> Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot bind 127.0.0.1:0")?;
    let address = listener
        .local_addr()
        .context("cannot read the bound address")?;
    eprintln!(
        "{}",
        json!({"level": "INFO", "target": "floor", "fields": {"message": "listening", "address": address.to_string()}})
    );

    // The load tool holds our stdin; its end (exit, crash) is our end.
    std::thread::Builder::new()
        .name("stdin-watch".into())
        .spawn(|| {
            let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
            std::process::exit(0);
        })
        .context("cannot start the stdin watcher")?;

    let hub = Arc::new(Hub::default());
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                tokio::spawn(connection(stream, Arc::clone(&hub)));
            }
            Err(err) => {
                // Out of descriptors, most likely: back off instead of spinning on accept.
                eprintln!(
                    "{}",
                    json!({"level": "WARN", "target": "floor", "fields": {"message": "accept failed", "error": err.to_string()}})
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Reads the first request head and becomes either a WebSocket session or an HTTP
/// keep-alive loop.
async fn connection(stream: TcpStream, hub: Arc<Hub>) {
    // Frames are small and their latency is measured.
    let _ = stream.set_nodelay(true);
    let mut conn = Conn {
        stream,
        buffer: Vec::with_capacity(1024),
    };
    let head = match conn.read_head().await {
        Ok(Some(head)) => head,
        Ok(None) | Err(_) => return,
    };
    if head.method == "GET" && head.path() == "/ws" {
        upgrade(conn, head, hub).await;
    } else {
        http::serve(conn, head, hub).await;
    }
}

/// Completes a WebSocket upgrade, then hands the socket to a task of its own: this task's
/// future is sized for the handshake and the HTTP keep-alive loop (2.8 KiB), which a
/// session would otherwise carry for its whole life.
async fn upgrade(mut conn: Conn, head: RequestHead, hub: Arc<Hub>) {
    let Some((user, response)) = handshake(&head) else {
        let _ = conn
            .stream
            .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            .await;
        return;
    };
    // The head would otherwise live, with its header strings, as long as the session.
    drop(head);
    if conn.stream.write_all(response.as_bytes()).await.is_err() {
        return;
    }

    // Bytes the client sent right behind its upgrade request belong to the first frame.
    // Otherwise the buffer goes now: held until the session ends, it would cost 1 KiB per
    // connection.
    let Conn { stream, buffer } = conn;
    let config = Some(server_config());
    let ws = if buffer.is_empty() {
        drop(buffer);
        WebSocketStream::from_raw_socket(stream, Role::Server, config).await
    } else {
        WebSocketStream::from_partially_read(stream, buffer, Role::Server, config).await
    };
    tokio::spawn(session(ws, user, hub));
}

/// The user and the `101 Switching Protocols` answer of a WebSocket upgrade request, or
/// `None` if it is not one.
fn handshake(head: &RequestHead) -> Option<(Option<Arc<str>>, String)> {
    let upgrade = head
        .header("upgrade")
        .is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
    let key = head.header("sec-websocket-key").filter(|_| upgrade)?;
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    );
    let user = head.query("user").filter(|u| !u.is_empty()).map(Arc::from);
    Some((user, response))
}

/// One WebSocket connection, from the upgrade to the close.
async fn session(ws: WebSocketStream<TcpStream>, user: Option<Arc<str>>, hub: Arc<Hub>) {
    let id = hub.next_id();
    let outbox = Arc::new(Outbox::new(user));
    let mut tracked: Vec<Arc<str>> = Vec::new();
    exchange(ws, id, &outbox, &mut tracked, &hub).await;
    hub.remove(id, &tracked);
}

/// Client frames in, acks and `outdated` frames out, until either side closes.
async fn exchange(
    mut ws: WebSocketStream<TcpStream>,
    id: ConnId,
    outbox: &Arc<Outbox>,
    tracked: &mut Vec<Arc<str>>,
    hub: &Hub,
) {
    loop {
        let reply = tokio::select! {
            message = ws.next() => match message {
                Some(Ok(Message::Text(text))) => handle_frame(&text, id, outbox, tracked, hub),
                Some(Ok(Message::Binary(_))) => {
                    error_frame("binary_not_supported", "frames are JSON text")
                }
                // tungstenite queues the pong and sends it with the next write or read.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Close(_))) | None => return,
                Some(Err(WsError::Capacity(_))) => {
                    let close = CloseFrame {
                        code: CloseCode::Size,
                        reason: format!("a frame is limited to {MAX_FRAME_BYTES} bytes").into(),
                    };
                    let _ = ws.close(Some(close)).await;
                    return;
                }
                Some(Err(_)) => return,
            },
            () = outbox.wake.notified() => {
                let tags = outbox.take();
                if tags.is_empty() {
                    // Unsubscribed before this wake-up was served.
                    continue;
                }
                let tags: Vec<&str> = tags.iter().map(|t| &**t).collect();
                ServerFrame::Outdated { tags: &tags }.to_text()
            }
        };
        if ws.send(Message::text(reply)).await.is_err() {
            return;
        }
    }
}

/// Answers one client text frame, per docs/protocol.md.
fn handle_frame(
    text: &str,
    id: ConnId,
    outbox: &Arc<Outbox>,
    tracked: &mut Vec<Arc<str>>,
    hub: &Hub,
) -> String {
    let Ok(frame) = serde_json::from_str::<Value>(text) else {
        return error_frame("invalid_json", "the frame is not JSON");
    };
    let Some(kind) = frame.get("type").and_then(Value::as_str) else {
        return error_frame(
            "invalid_frame",
            "a frame is an object with a string \"type\"",
        );
    };
    if kind != "subscribe" && kind != "unsubscribe" {
        return error_frame("unknown_type", &format!("unknown frame type {kind:?}"));
    }
    let Some(raw_tags) = frame.get("tags").and_then(Value::as_array) else {
        return error_frame("invalid_frame", "\"tags\" must be an array");
    };
    let mut tags = Vec::with_capacity(raw_tags.len());
    for tag in raw_tags {
        let Some(tag) = tag.as_str().filter(|t| !t.is_empty()) else {
            return error_frame("invalid_tag", "a tag is a non-empty string");
        };
        if tag.len() > MAX_TAG_BYTES {
            let message = format!(
                "a tag is {} bytes long; the limit is {MAX_TAG_BYTES}",
                tag.len()
            );
            return error_frame("tag_too_long", &message);
        }
        tags.push(tag);
    }

    if kind == "subscribe" {
        if let Err(SubscribeError::TooManyTags) =
            hub.subscribe(id, outbox, tracked, &tags, MAX_TAGS_PER_CONNECTION)
        {
            let message = format!("a connection tracks at most {MAX_TAGS_PER_CONNECTION} tags");
            return error_frame("too_many_tags", &message);
        }
        ServerFrame::Subscribed { tags: &tags }.to_text()
    } else {
        hub.unsubscribe(id, outbox, tracked, &tags);
        ServerFrame::Unsubscribed { tags: &tags }.to_text()
    }
}

fn error_frame(code: &str, message: &str) -> String {
    ServerFrame::Error { code, message }.to_text()
}

/// Frames to the client, serialized straight from borrowed tags: building a
/// `serde_json::Value` first would cost a map and a string per tag for every frame.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ServerFrame<'a> {
    Subscribed { tags: &'a [&'a str] },
    Unsubscribed { tags: &'a [&'a str] },
    Outdated { tags: &'a [&'a str] },
    Error { code: &'a str, message: &'a str },
}

impl ServerFrame<'_> {
    fn to_text(&self) -> String {
        // Serializing strings into a String cannot fail; an empty frame would be answered
        // with an invalid_json error by any client, so the fallback is visible anyway.
        serde_json::to_string(self).unwrap_or_default()
    }
}
