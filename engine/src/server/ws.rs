//! WebSocket connections: the upgrade, then one task per connection that owns the socket,
//! reads client frames, writes what the hub delivered to its mailbox, pings on each
//! heartbeat tick and closes on shutdown (both signalled through the hub).
//!
//! Memory per connection is kept small on purpose (the goal is 100,000 connections on one
//! small machine): the upgraded socket is unwrapped back to the raw `TcpStream` so hyper's
//! read buffer is freed, tungstenite's buffers are sized for small frames, and the
//! connection has one task, one mailbox and no timer or channel receiver of its own: the
//! hub's signals wake it for mail, heartbeat ticks and shutdown.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{Request, State as Shared};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::{Sink, StreamExt};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;
use tracing::{debug, Instrument};

use super::http::{ApiError, Peer};
use super::{State, TaskGuard};
use crate::hub::{outdated_json, Conn, Mailbox, Rejected, Signals, Tag};
use crate::identity::Identity;

type Socket = WebSocketStream<TcpStream>;

/// `GET /ws`: checks the handshake and the identity, answers 101, and hands the socket to
/// a connection task once hyper completes the upgrade.
pub async fn upgrade(Shared(state): Shared<Arc<State>>, mut req: Request) -> Response {
    let key = match handshake_key(req.headers()) {
        Ok(key) => key,
        Err(err) => return err.into_response(),
    };
    let identity = match state.auth.authenticate(req.uri().query()) {
        Ok(identity) => identity,
        Err(err) => {
            return ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", err.to_string())
                .into_response()
        }
    };
    let peer = req.extensions().get::<Peer>().map(|p| p.0);
    let on_upgrade = hyper::upgrade::on(&mut req);

    let guard = state.tasks.enter();
    let span = tracing::debug_span!("connection", peer = ?peer, user = ?identity.user_id());
    let task = async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(err) => {
                debug!(error = %err, "upgrade failed");
                return;
            }
        };
        let config = socket_config(&state);
        // Unwrap to the raw socket: the `Upgraded` wrapper would keep hyper's read buffer
        // (and a boxed trait object) alive for the life of the connection.
        let socket = match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => {
                let stream = parts.io.into_inner();
                if parts.read_buf.is_empty() {
                    WebSocketStream::from_raw_socket(stream, Role::Server, Some(config)).await
                } else {
                    let early = parts.read_buf.to_vec();
                    WebSocketStream::from_partially_read(stream, early, Role::Server, Some(config))
                        .await
                }
            }
            Err(_) => {
                // Every connection is accepted by our own loop as a TokioIo<TcpStream>.
                debug!("upgraded connection is not a TCP stream");
                return;
            }
        };
        // The session runs as a task of its own, so that it does not carry this task's
        // handshake state for the life of the connection.
        tokio::spawn(run(state, socket, identity, guard).instrument(tracing::Span::current()));
    };
    tokio::spawn(task.instrument(span));

    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    // derive_accept_key yields base64 text, always a valid header value.
    let accept = HeaderValue::from_str(&derive_accept_key(key.as_bytes()))
        .expect("base64 is a valid header value");
    headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    response
}

/// The `Sec-WebSocket-Key` of a valid upgrade request.
fn handshake_key(headers: &HeaderMap) -> Result<String, ApiError> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if !has_token(header::CONNECTION, "upgrade") || !has_token(header::UPGRADE, "websocket") {
        return Err(ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "upgrade_required",
            "/ws is a WebSocket endpoint; connect with a WebSocket client",
        ));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "only WebSocket version 13 is supported",
        ));
    }
    headers
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Sec-WebSocket-Key is missing",
            )
        })
}

fn socket_config(state: &State) -> WebSocketConfig {
    let max = state.limits.max_frame_bytes;
    // The read buffer grows for a larger frame; most client frames (a subscribe with a few
    // tags) fit in 256 bytes, and every connection pays for its size.
    // Writes go out as soon as they are made (write_buffer_size 0): frames are sent one at a
    // time and each is awaited, so at most one frame sits in the write buffer.
    WebSocketConfig::default()
        .read_buffer_size(256)
        .write_buffer_size(0)
        .max_write_buffer_size(max.max(64 * 1024) * 2)
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
}

/// How a connection ended.
enum End {
    /// The peer closed or the socket failed: nothing more to send.
    Gone,
    /// Close with this code and reason.
    Close(CloseCode, &'static str),
}

/// The connection task's body.
///
/// Written as a function returning an `async move` block rather than an `async fn`: an
/// `async fn` moves its by-value parameters into locals, and the state machine then holds
/// the socket twice. Every connection pays for this future's size.
#[allow(clippy::manual_async_fn)] // see above: an `async fn` would store the socket twice
fn run(
    state: Arc<State>,
    mut socket: Socket,
    identity: Identity,
    guard: TaskGuard,
) -> impl Future<Output = ()> {
    async move {
        let _guard = guard;
        let conn = match state.hub.register(&identity) {
            Ok(conn) => conn,
            Err(rejected) => {
                debug!(reason = %rejected, "connection refused");
                let code = match rejected {
                    Rejected::ShuttingDown => CloseCode::Away,
                    Rejected::TooManyConnections { .. } => CloseCode::Policy,
                };
                // Boxed: a close happens once, and its future would otherwise add to the
                // size of every connection's task.
                Box::pin(close(&mut socket, code, &rejected.to_string())).await;
                return;
            }
        };
        debug!("connection opened");
        let mut tracked: Vec<Tag> = Vec::new();
        let end = serve(&state, &mut socket, &identity, &conn, &mut tracked).await;
        state.hub.unregister(&conn, &mut tracked);
        match end {
            End::Gone => debug!("connection closed by peer"),
            End::Close(code, reason) => {
                debug!(code = u16::from(code), reason, "closing connection");
                Box::pin(close(&mut socket, code, reason)).await;
            }
        }
    }
}

async fn serve(
    state: &State,
    socket: &mut Socket,
    identity: &Identity,
    conn: &Arc<Conn>,
    tracked: &mut Vec<Tag>,
) -> End {
    let mut last_heard = Instant::now();
    let idle_timeout = state.limits.idle_timeout();
    loop {
        tokio::select! {
            // Signals first, so a busy connection still closes promptly.
            biased;
            signals = conn.signalled() => {
                if signals.contains(Signals::STOP) {
                    return End::Close(CloseCode::Away, "server shutting down");
                }
                if signals.contains(Signals::TICK) {
                    if last_heard.elapsed() >= idle_timeout {
                        return End::Close(CloseCode::Normal, "idle timeout");
                    }
                    if let Err(end) = send(state, socket, conn, Some(Message::Ping(Default::default()))).await {
                        return end;
                    }
                }
                if signals.contains(Signals::MAIL) {
                    let (text, since) = match conn.take() {
                        Mailbox::Empty => continue,
                        Mailbox::Frame(frame, since) => (frame.text, since),
                        Mailbox::Tags(tags, since) => (Utf8Bytes::from(outdated_json(&tags)), since),
                    };
                    if let Err(end) = send(state, socket, conn, Some(Message::Text(text))).await {
                        return end;
                    }
                    state.deliveries.observe(since.elapsed());
                }
            }
            incoming = socket.next() => {
                last_heard = Instant::now();
                let reply = match incoming {
                    None => return End::Gone,
                    Some(Err(WsError::Capacity(CapacityError::MessageTooLong { .. }))) => {
                        return End::Close(CloseCode::Size, "frame too large");
                    }
                    Some(Err(err)) => {
                        debug!(error = %err, "read failed");
                        return End::Gone;
                    }
                    Some(Ok(Message::Text(text))) => handle_text(state, identity, conn, tracked, &text),
                    Some(Ok(Message::Binary(_))) => {
                        error_frame("binary_not_supported", "send JSON text frames")
                    }
                    // tungstenite queues the pong itself and sends it with the next write.
                    Some(Ok(Message::Ping(_))) => {
                        if let Err(end) = send(state, socket, conn, None).await {
                            return end;
                        }
                        continue;
                    }
                    Some(Ok(Message::Pong(_) | Message::Frame(_))) => continue,
                    // tungstenite queued the close reply; send it before dropping the socket.
                    Some(Ok(Message::Close(_))) => {
                        let _ = send(state, socket, conn, None).await;
                        return End::Gone;
                    }
                };
                if let Err(end) = send(state, socket, conn, Some(Message::Text(reply.into()))).await {
                    return end;
                }
            }
        }
    }
}

/// Sends `message` (or, with `None`, flushes what tungstenite queued: a pong, a close
/// reply), giving up when the server shuts down or the peer has not taken the message for a
/// whole idle timeout (it stopped reading). Mail that arrives meanwhile is left signalled
/// for the select loop.
fn send<'a>(
    state: &State,
    socket: &'a mut Socket,
    conn: &'a Conn,
    message: Option<Message>,
) -> Sending<'a> {
    Sending {
        socket,
        conn,
        message,
        started: Instant::now(),
        idle_timeout: state.limits.idle_timeout(),
    }
}

/// The future of [`send`], written by hand over the `Sink` API: every connection's task
/// holds one while writing, and an `async fn` with a `select!` inside is three times larger.
struct Sending<'a> {
    socket: &'a mut Socket,
    conn: &'a Conn,
    /// The message until the sink accepted it.
    message: Option<Message>,
    started: Instant,
    idle_timeout: std::time::Duration,
}

impl Future for Sending<'_> {
    type Output = Result<(), End>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), End>> {
        let this = self.get_mut();
        if let Poll::Ready(signals) = Pin::new(&mut this.conn.signalled()).poll(cx) {
            if signals.contains(Signals::STOP) {
                // The close is bounded by its own timeout, so a peer that is not reading
                // delays shutdown by at most that.
                return Poll::Ready(Err(End::Close(CloseCode::Away, "server shutting down")));
            }
            if signals.contains(Signals::TICK) && this.started.elapsed() >= this.idle_timeout {
                debug!("peer stopped reading");
                return Poll::Ready(Err(End::Gone));
            }
            this.conn.keep(Signals::MAIL.and(signals));
        }
        let mut socket = Pin::new(&mut *this.socket);
        let failed = |err: WsError| {
            debug!(error = %err, "write failed");
            End::Gone
        };
        if let Some(message) = this.message.take() {
            match socket.as_mut().poll_ready(cx) {
                Poll::Ready(Ok(())) => socket.as_mut().start_send(message).map_err(failed)?,
                Poll::Ready(Err(err)) => return Poll::Ready(Err(failed(err))),
                Poll::Pending => {
                    this.message = Some(message);
                    return Poll::Pending;
                }
            }
        }
        socket.poll_flush(cx).map_err(failed)
    }
}

/// Sends a close frame and flushes it, within a second: the peer may no longer be reading.
async fn close(socket: &mut Socket, code: CloseCode, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from(reason),
    };
    let closing = async {
        let _ = socket.close(Some(frame)).await;
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), closing).await;
}

fn error_frame(code: &str, message: &str) -> String {
    serde_json::json!({"type": "error", "code": code, "message": message}).to_string()
}

fn ack(kind: &str, tags: &[&str]) -> String {
    serde_json::json!({"type": kind, "tags": tags}).to_string()
}

/// Handles one client text frame; returns the reply (an ack or an error).
fn handle_text(
    state: &State,
    identity: &Identity,
    conn: &Arc<Conn>,
    tracked: &mut Vec<Tag>,
    text: &str,
) -> String {
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(err) => return error_frame("invalid_json", &format!("the frame is not JSON: {err}")),
    };
    let Some(kind) = value.get("type").and_then(Value::as_str) else {
        return error_frame(
            "invalid_frame",
            "a frame is a JSON object with a string `type`",
        );
    };
    if kind != "subscribe" && kind != "unsubscribe" {
        return error_frame(
            "unknown_type",
            &format!("unknown frame type `{kind}`; expected subscribe or unsubscribe"),
        );
    }
    let Some(list) = value.get("tags").and_then(Value::as_array) else {
        return error_frame("invalid_frame", "`tags` must be an array of strings");
    };
    let limits = &state.limits;
    let mut tags: Vec<&str> = Vec::with_capacity(list.len());
    for item in list {
        let Some(tag) = item.as_str().filter(|t| !t.is_empty()) else {
            return error_frame("invalid_tag", "every tag must be a non-empty string");
        };
        if tag.len() > limits.max_tag_bytes {
            return error_frame(
                "tag_too_long",
                &format!(
                    "a tag is {} bytes long; the limit is {}",
                    tag.len(),
                    limits.max_tag_bytes
                ),
            );
        }
        if kind == "subscribe" && !identity.may_track(tag) {
            return error_frame("forbidden_tag", &format!("you may not track `{tag}`"));
        }
        tags.push(tag);
    }

    if kind == "unsubscribe" {
        state.hub.unsubscribe(conn, &tags, tracked);
        return ack("unsubscribed", &tags);
    }
    let mut new: Vec<&str> = Vec::new();
    for &tag in &tags {
        if !tracked.iter().any(|t| &**t == tag) && !new.contains(&tag) {
            new.push(tag);
        }
    }
    if tracked.len() + new.len() > limits.max_tags_per_connection {
        return error_frame(
            "too_many_tags",
            &format!(
                "this connection would track {} tags; the limit is {}",
                tracked.len() + new.len(),
                limits.max_tags_per_connection
            ),
        );
    }
    state.hub.subscribe(conn, &new, tracked);
    ack("subscribed", &tags)
}
