//! WebSocket connections: the upgrade, then one task per connection that owns the socket,
//! reads client frames, writes what the hub delivered to its mailbox, pings on each
//! heartbeat tick and closes on shutdown.
//!
//! Memory per connection is kept small on purpose (the goal is 100,000 connections on one
//! small machine): the upgraded socket is unwrapped back to the raw `TcpStream` so hyper's
//! read buffer is freed, tungstenite's buffers are sized for small frames, and the
//! connection has one task, one mailbox and no timer of its own (the shared heartbeat ticks
//! for all).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State as Shared};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
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
use super::State;
use crate::hub::{outdated_json, Conn, Mailbox, Tag};
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
        let _guard = guard;
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
        run(state, socket, identity).await;
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
    // The read buffer grows for a larger frame; most client frames are a few hundred bytes.
    // Writes go out as soon as they are made (write_buffer_size 0): frames are sent one at a
    // time and each is awaited, so at most one frame sits in the write buffer.
    WebSocketConfig::default()
        .read_buffer_size(512)
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
async fn run(state: Arc<State>, mut socket: Socket, identity: Identity) {
    let conn = match state.hub.register(&identity) {
        Ok(conn) => conn,
        Err(rejected) => {
            debug!(reason = %rejected, "connection refused");
            close(&mut socket, CloseCode::Policy, &rejected.to_string()).await;
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
            close(&mut socket, code, reason).await;
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
    let mut beat = state.beat.clone();
    let mut last_heard = Instant::now();
    let idle_timeout = state.limits.idle_timeout();
    loop {
        tokio::select! {
            // Shutdown and heartbeat first, so a busy connection still closes promptly.
            biased;
            changed = beat.changed() => {
                if changed.is_err() || beat.borrow().shutting_down {
                    return End::Close(CloseCode::Away, "server shutting down");
                }
                if last_heard.elapsed() >= idle_timeout {
                    return End::Close(CloseCode::Normal, "idle timeout");
                }
                if let Err(end) = send(state, socket, &mut beat, Message::Ping(Default::default())).await {
                    return end;
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
                        if let Err(end) = flush(socket, &mut beat).await {
                            return end;
                        }
                        continue;
                    }
                    Some(Ok(Message::Pong(_) | Message::Frame(_))) => continue,
                    // tungstenite queued the close reply; send it before dropping the socket.
                    Some(Ok(Message::Close(_))) => {
                        let _ = flush(socket, &mut beat).await;
                        return End::Gone;
                    }
                };
                if let Err(end) = send(state, socket, &mut beat, Message::Text(reply.into())).await {
                    return end;
                }
            }
            () = conn.woken() => {
                let (text, since) = match conn.take() {
                    Mailbox::Empty => continue,
                    Mailbox::Frame(frame, since) => (frame.text, since),
                    Mailbox::Tags(tags, since) => (Utf8Bytes::from(outdated_json(&tags)), since),
                };
                if let Err(end) = send(state, socket, &mut beat, Message::Text(text)).await {
                    return end;
                }
                state.deliveries.observe(since.elapsed());
            }
        }
    }
}

/// Sends one message, giving up when the server shuts down or the peer has not taken the
/// message for a whole idle timeout (it stopped reading).
async fn send(
    state: &State,
    socket: &mut Socket,
    beat: &mut tokio::sync::watch::Receiver<super::Beat>,
    message: Message,
) -> Result<(), End> {
    let started = Instant::now();
    let idle_timeout = state.limits.idle_timeout();
    let sending = socket.send(message);
    tokio::pin!(sending);
    loop {
        tokio::select! {
            result = &mut sending => {
                return result.map_err(|err| {
                    debug!(error = %err, "write failed");
                    End::Gone
                });
            }
            changed = beat.changed() => {
                if changed.is_err() || beat.borrow().shutting_down {
                    return Err(End::Gone);
                }
                if started.elapsed() >= idle_timeout {
                    debug!("peer stopped reading");
                    return Err(End::Gone);
                }
            }
        }
    }
}

async fn flush(
    socket: &mut Socket,
    beat: &mut tokio::sync::watch::Receiver<super::Beat>,
) -> Result<(), End> {
    tokio::select! {
        result = socket.flush() => result.map_err(|_| End::Gone),
        _ = beat.changed() => Ok(()),
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
