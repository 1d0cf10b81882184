//! The browsers: one tokio-tungstenite client task per connection, in this process. Each
//! connects as its user, subscribes its tags, waits for the `subscribed` ack, then notes
//! the arrival instant of every frame until told to stop.
//!
//! Frames are kept as received and parsed only after the run (see analysis.rs): the receive
//! loop shares 2 cores with the server, so it does as little as possible.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

use crate::workload::{to_index, Workload};

/// Connections in their handshake at once: enough to keep both cores busy, few enough
/// that the listen backlog never overflows (an overflow costs a 1 s SYN retry and would
/// show up as setup time, not as server cost).
const SETUP_CONCURRENCY: usize = 64;

/// How long all connections together may take to connect and be acknowledged.
const SETUP_TIMEOUT: Duration = Duration::from_secs(300);

/// A frame as it arrived.
#[derive(Debug, Clone)]
pub struct Frame {
    /// When the receive loop got it.
    pub at: Instant,
    /// Its text, parsed after the run.
    pub text: Utf8Bytes,
}

/// What one connection saw after its ack.
#[derive(Debug, Default)]
pub struct ClientLog {
    /// Text frames in arrival order.
    pub frames: Vec<Frame>,
    /// Why the connection ended before it was told to stop, if it did.
    pub failure: Option<String>,
}

/// The running clients.
pub struct Clients {
    /// One task per connection, index = connection; each returns its log when stopped.
    tasks: Vec<JoinHandle<ClientLog>>,
    /// Set to true to make every task close its connection and return.
    stop: watch::Sender<bool>,
    /// Text frames received by all connections after their acks, for drain detection.
    frames_seen: Arc<AtomicU64>,
}

impl Clients {
    /// Opens every connection of `workload` to `addr` and returns once all have their
    /// `subscribed` ack, so that nothing published afterwards may be missed.
    pub async fn connect(addr: SocketAddr, workload: &Workload) -> Result<Clients> {
        let (stop, stop_rx) = watch::channel(false);
        let frames_seen = Arc::new(AtomicU64::new(0));
        let permits = Arc::new(Semaphore::new(SETUP_CONCURRENCY));
        let (ready_tx, mut ready_rx) = mpsc::channel(SETUP_CONCURRENCY);

        let mut tasks = Vec::with_capacity(workload.subscriptions.len());
        for (c, tags) in workload.subscriptions.iter().enumerate() {
            let user = Workload::user_name(workload.conn_user[c]);
            let tags: Vec<&str> = tags
                .iter()
                .map(|&t| workload.tag_names[to_index(t)].as_str())
                .collect();
            let setup = Setup {
                addr,
                path: format!("/ws?user={user}"),
                subscribe: json!({"type": "subscribe", "tags": tags}).to_string(),
                ack: json!({"type": "subscribed", "tags": tags}),
            };
            tasks.push(tokio::spawn(run_client(
                setup,
                Arc::clone(&permits),
                ready_tx.clone(),
                stop_rx.clone(),
                Arc::clone(&frames_seen),
            )));
        }
        drop(ready_tx);

        let clients = Clients {
            tasks,
            stop,
            frames_seen,
        };
        let total = clients.tasks.len();
        let wait_all = async {
            for done in 0..total {
                match ready_rx.recv().await {
                    Some(Ok(())) => {}
                    Some(Err(err)) => {
                        bail!("connection setup failed after {done} of {total}: {err}")
                    }
                    None => bail!("client tasks ended before all were ready"),
                }
            }
            Ok(())
        };
        match tokio::time::timeout(SETUP_TIMEOUT, wait_all).await {
            Ok(Ok(())) => Ok(clients),
            Ok(Err(err)) => {
                clients.abort();
                Err(err)
            }
            Err(_) => {
                clients.abort();
                bail!("not all {total} connections were acknowledged within {SETUP_TIMEOUT:?}")
            }
        }
    }

    /// Text frames received so far by all connections.
    pub fn frames_seen(&self) -> u64 {
        self.frames_seen.load(Ordering::Relaxed)
    }

    /// Stops every connection and returns the logs, indexed by connection.
    pub async fn stop(self) -> Result<Vec<ClientLog>> {
        // Receivers only go away when their task has ended, which the join below reports.
        let _ = self.stop.send(true);
        let mut logs = Vec::with_capacity(self.tasks.len());
        for task in self.tasks {
            logs.push(task.await.context("a client task panicked")?);
        }
        Ok(logs)
    }

    fn abort(&self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// What a client sends and expects during setup.
struct Setup {
    addr: SocketAddr,
    path: String,
    subscribe: String,
    ack: serde_json::Value,
}

/// Small buffers: the load tool holds up to 10,000 of these, and frames are a few dozen
/// bytes (the 128 KiB defaults would cost a gigabyte of address space for nothing).
pub fn client_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
}

/// Connects, upgrades to WebSocket at `path` and waits for the handshake to finish.
pub async fn open(addr: SocketAddr, path: &str) -> Result<WebSocketStream<TcpStream>> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect to {addr}"))?;
    // Frames are small and latency is measured: no Nagle delay.
    stream.set_nodelay(true).context("set TCP_NODELAY")?;
    let url = format!("ws://{addr}{path}");
    let (ws, _response) =
        tokio_tungstenite::client_async_with_config(url.as_str(), stream, Some(client_config()))
            .await
            .with_context(|| format!("WebSocket handshake with {url}"))?;
    Ok(ws)
}

/// Reads the next text frame, failing on close and skipping control frames.
pub async fn next_text(ws: &mut WebSocketStream<TcpStream>) -> Result<Utf8Bytes> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => return Ok(text),
            Some(Ok(Message::Close(frame))) => bail!("closed by the server: {frame:?}"),
            Some(Ok(Message::Binary(_))) => bail!("unexpected binary frame"),
            Some(Ok(_)) => {}
            Some(Err(err)) => return Err(anyhow!(err).context("read error")),
            None => bail!("connection ended"),
        }
    }
}

async fn setup_client(setup: &Setup) -> Result<WebSocketStream<TcpStream>> {
    let mut ws = open(setup.addr, &setup.path).await?;
    ws.send(Message::text(setup.subscribe.as_str()))
        .await
        .context("send subscribe")?;
    let reply = next_text(&mut ws)
        .await
        .context("waiting for the subscribed ack")?;
    let parsed: serde_json::Value = serde_json::from_str(&reply)
        .with_context(|| format!("the reply to subscribe is not JSON: {reply}"))?;
    if parsed != setup.ack {
        bail!("expected {} in reply to subscribe, got {reply}", setup.ack);
    }
    Ok(ws)
}

async fn run_client(
    setup: Setup,
    permits: Arc<Semaphore>,
    ready: mpsc::Sender<Result<(), String>>,
    mut stop: watch::Receiver<bool>,
    frames_seen: Arc<AtomicU64>,
) -> ClientLog {
    let mut log = ClientLog::default();

    let permit = permits.acquire_owned().await;
    let result = setup_client(&setup).await;
    drop(permit);
    let mut ws = match result {
        Ok(ws) => {
            let _ = ready.send(Ok(())).await;
            ws
        }
        Err(err) => {
            let message = format!("{err:#}");
            let _ = ready.send(Err(message.clone())).await;
            log.failure = Some(message);
            return log;
        }
    };
    drop(ready);

    loop {
        tokio::select! {
            // Stop first: once asked, frames still in flight are not wanted.
            biased;
            _ = stop.changed() => break,
            message = ws.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    log.frames.push(Frame { at: Instant::now(), text });
                    frames_seen.fetch_add(1, Ordering::Relaxed);
                }
                // tungstenite answers pings itself on the next read.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Binary(_))) => {
                    log.failure = Some("unexpected binary frame".into());
                    break;
                }
                Some(Ok(Message::Close(frame))) => {
                    log.failure = Some(format!("closed by the server: {frame:?}"));
                    break;
                }
                Some(Err(err)) => {
                    log.failure = Some(format!("read error: {err}"));
                    break;
                }
                None => {
                    log.failure = Some("connection ended".into());
                    break;
                }
            },
        }
    }
    log
}
