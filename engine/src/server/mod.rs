//! The server: binds the listener, accepts connections, serves HTTP on each with hyper and
//! the axum router, and runs shutdown.
//!
//! Tasks and what they own:
//! - the accept loop owns the listener; it stops accepting on the first shutdown signal;
//! - one task per TCP connection owns hyper's HTTP/1 connection; a WebSocket upgrade hands
//!   the raw socket to a new task (see [`ws`]) and the HTTP task ends;
//! - the heartbeat task signals every WebSocket connection through the hub each ping
//!   interval (they ping, and close if idle);
//! - shutdown sets the `shutdown` watch (HTTP connections finish their request and close)
//!   and has the hub signal every WebSocket to close with 1001;
//! - the source supervisor (see [`crate::sources`]) owns the source threads.
//!
//! Every connection task holds a [`TaskGuard`]; shutdown waits, up to
//! `server.shutdown_timeout_ms`, for all of them to end.

mod http;
mod ws;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tracing::{debug, info, warn, Instrument};

use crate::config::LimitsConfig;
use crate::hub::Hub;
use crate::identity::{Authenticator, DevAuthenticator};
use crate::metrics::Deliveries;
use crate::publish::Publisher;
use crate::sources::Supervisor;
use crate::{Engine, StartError};

/// State shared by every request handler and connection task.
pub struct State {
    /// The routing index.
    pub hub: Arc<Hub>,
    /// The publish path.
    pub publisher: Publisher,
    /// Client limits.
    pub limits: LimitsConfig,
    /// Identifies WebSocket users.
    pub auth: Box<dyn Authenticator>,
    /// Delivery counters and latency histogram.
    pub deliveries: Deliveries,
    /// True once shutdown began; each HTTP connection task holds a receiver.
    pub shutdown: watch::Receiver<bool>,
    /// True once plugins are loaded and the listener is bound.
    pub ready: AtomicBool,
    /// The event sources and their status.
    pub sources: Arc<Supervisor>,
    /// Counts live connection tasks, for shutdown.
    pub tasks: Arc<Tracker>,
}

/// Counts live tasks; [`Tracker::wait_idle`] returns once there are none.
#[derive(Default)]
pub struct Tracker {
    live: AtomicUsize,
    idle: Notify,
}

/// Held by a live task; dropping it counts the task as ended.
pub struct TaskGuard(Arc<Tracker>);

impl Tracker {
    /// Counts a new task.
    pub fn enter(self: &Arc<Self>) -> TaskGuard {
        self.live.fetch_add(1, Ordering::SeqCst);
        TaskGuard(self.clone())
    }

    /// The number of live tasks.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }

    /// Waits until no task is live.
    pub async fn wait_idle(&self) {
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            // Register before checking, so that a task ending in between is not missed.
            idle.as_mut().enable();
            if self.live() == 0 {
                return;
            }
            idle.await;
        }
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        if self.0.live.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Serves until SIGINT or SIGTERM, then shuts down gracefully.
pub async fn run(engine: Engine) -> Result<(), StartError> {
    run_until(engine, shutdown_signal()).await
}

/// Serves until `shutdown` completes, then shuts down gracefully.
pub async fn run_until(
    engine: Engine,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), StartError> {
    let Engine {
        config,
        registry,
        chain,
    } = engine;
    let cfg = &config.config;
    let addr = cfg.server.listen;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })?;

    let hub = Arc::new(Hub::new(cfg.limits.max_connections_per_user));
    let publisher = Publisher::new(chain, hub.clone());
    let sources = Arc::new(Supervisor::start(
        &config,
        &registry,
        publisher.clone(),
        tokio::runtime::Handle::current(),
    )?);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let state = Arc::new(State {
        hub,
        publisher,
        limits: cfg.limits.clone(),
        auth: Box::new(DevAuthenticator),
        deliveries: Deliveries::default(),
        shutdown: shutdown_rx,
        ready: AtomicBool::new(false),
        sources: sources.clone(),
        tasks: Arc::new(Tracker::default()),
    });
    let router = http::router(state.clone(), cfg.demo.enabled);

    let heartbeat = tokio::spawn(heartbeat(state.hub.clone(), cfg.limits.ping_interval()));
    state.ready.store(true, Ordering::SeqCst);
    info!(address = %local, demo = cfg.demo.enabled, "listening");

    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => serve_connection(&state, &router, stream, peer),
                // Running out of file descriptors must not end the server; back off briefly
                // so that the loop does not spin while connections close.
                Err(err) => {
                    warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }

    info!("shutting down");
    drop(listener);
    state.ready.store(false, Ordering::SeqCst);
    heartbeat.abort();
    shutdown_tx.send_replace(true);
    state.hub.stop_all();
    let deadline = Duration::from_millis(cfg.server.shutdown_timeout_ms);
    if tokio::time::timeout(deadline, state.tasks.wait_idle())
        .await
        .is_err()
    {
        warn!(
            connections = state.tasks.live(),
            "shutdown deadline passed with connections still open"
        );
    }
    sources.shutdown().await;
    info!("shut down");
    Ok(())
}

/// Signals every WebSocket connection each `interval`, until aborted.
async fn heartbeat(hub: Arc<Hub>, interval: Duration) {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        hub.tick_all();
    }
}

/// Serves HTTP/1 on one accepted connection, with upgrades, in a task of its own.
fn serve_connection(
    state: &Arc<State>,
    router: &axum::Router,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
) {
    // Notifications are small and latency-sensitive.
    let _ = stream.set_nodelay(true);
    let guard = state.tasks.enter();
    let mut shutdown = state.shutdown.clone();
    let service = http::service(router.clone(), peer);
    let max_buf = state.limits.max_frame_bytes.max(16 * 1024);
    let task = async move {
        let _guard = guard;
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(30))
            .max_buf_size(max_buf)
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        tokio::pin!(conn);
        loop {
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(err) = result {
                        debug!(error = %err, "http connection ended with an error");
                    }
                    break;
                }
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        // Finish the request in flight, then close.
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.as_mut().await;
                        break;
                    }
                }
            }
        }
    };
    tokio::spawn(task.instrument(tracing::debug_span!("http", %peer)));
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let ctrl_c = tokio::signal::ctrl_c();
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(err) => {
            warn!(error = %err, "cannot listen for SIGTERM; only SIGINT stops the server");
            let _ = ctrl_c.await;
        }
    }
}
