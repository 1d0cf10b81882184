//! One measurement against one server: spawn it, read its idle memory, connect and
//! subscribe every client, read its memory again, publish on schedule while sampling its
//! CPU time, wait for deliveries to stop, then match what arrived (analysis.rs).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::analysis::{self, Outcome};
use crate::clients::Clients;
use crate::publisher::{self, PublishLog};
use crate::server::{self, CpuTime, LogProblems, ServerKind, ServerProcess};
use crate::workload::Workload;

/// Deliveries are over when no frame has arrived for this long after the last publish was
/// answered. Loopback latencies are milliseconds, so a second of silence means the server
/// has nothing left in flight, not that it is slow.
const DRAIN_QUIET: Duration = Duration::from_secs(1);

/// Longest wait for deliveries after the last publish was answered.
const DRAIN_MAX: Duration = Duration::from_secs(30);

/// What one server did.
#[derive(Debug)]
pub struct Figures {
    /// The server measured.
    pub kind: ServerKind,
    /// Time to connect and have every subscribe acknowledged.
    pub setup: Duration,
    /// Server RSS before any client connected.
    pub rss_idle: u64,
    /// Server RSS with every connection subscribed.
    pub rss_subscribed: u64,
    /// Connections measured (for RSS per connection).
    pub connections: u32,
    /// The publish phase, if the scenario has one.
    pub publish: Option<PublishFigures>,
    /// Connections that ended before they were stopped, with the first reason.
    pub client_failures: (u64, Option<String>),
    /// Warn and error lines of the server.
    pub problems: LogProblems,
}

impl Figures {
    /// (RSS subscribed − RSS idle) / connections, in bytes; negative if the allocator gave
    /// memory back in between.
    pub fn rss_per_connection(&self) -> f64 {
        (self.rss_subscribed as f64 - self.rss_idle as f64) / f64::from(self.connections)
    }
}

/// The publish phase of one server.
#[derive(Debug)]
pub struct PublishFigures {
    /// What the publishers did.
    pub log: PublishLog,
    /// What the clients got.
    pub outcome: Outcome,
    /// Server CPU time from the first publish to the end of the drain.
    pub server_cpu: CpuTime,
    /// This process's CPU time over the same span: clients and publishers share the cores.
    pub load_cpu: CpuTime,
    /// Whether the drain hit `DRAIN_MAX` with frames still arriving.
    pub drain_cut: bool,
}

impl PublishFigures {
    /// Server CPU time per delivered (connection, publish) pair, in seconds.
    pub fn cpu_per_delivery(&self) -> Option<f64> {
        let delivered = self.outcome.delivered();
        (delivered > 0).then(|| self.server_cpu.total().as_secs_f64() / delivered as f64)
    }
}

/// Measures `kind` under `workload`.
pub async fn measure(
    kind: ServerKind,
    workload: &Arc<Workload>,
    tagcast_bin: &std::path::Path,
) -> Result<Figures> {
    let server = ServerProcess::start(kind, tagcast_bin).await?;
    eprintln!(
        "{}: pid {} listening on {}",
        kind.name(),
        server.pid(),
        server.addr
    );
    let rss_idle = server.rss_bytes()?;

    let started = Instant::now();
    let clients = Clients::connect(server.addr, workload)
        .await
        .with_context(|| format!("connecting the clients to {}", kind.name()))?;
    let setup = started.elapsed();
    let rss_subscribed = server.rss_bytes()?;
    eprintln!(
        "{}: {} connections subscribed in {:.2} s",
        kind.name(),
        workload.shape.connections,
        setup.as_secs_f64()
    );

    let mut publish = None;
    if !workload.publishes.is_empty() {
        let server_cpu = server.cpu_time()?;
        let load_cpu = server::self_cpu_time()?;
        eprintln!(
            "{}: publishing {} changes at {}/s",
            kind.name(),
            workload.publishes.len(),
            workload.shape.rate
        );
        let log = publisher::run(server.addr, Arc::clone(workload)).await?;
        let drain_cut = drain(&clients).await;
        publish = Some((
            log,
            server.cpu_time()? - server_cpu,
            server::self_cpu_time()? - load_cpu,
            drain_cut,
        ));
    }

    let logs = clients.stop().await?;
    let problems = server.problems();
    drop(server);

    let mut failures = logs.iter().filter_map(|log| log.failure.as_ref());
    let client_failures = (failures.clone().count() as u64, failures.next().cloned());
    let publish = publish.map(|(log, server_cpu, load_cpu, drain_cut)| {
        let outcome = analysis::analyse(workload, &log.sent, &logs);
        PublishFigures {
            log,
            outcome,
            server_cpu,
            load_cpu,
            drain_cut,
        }
    });
    Ok(Figures {
        kind,
        setup,
        rss_idle,
        rss_subscribed,
        connections: workload.shape.connections,
        publish,
        client_failures,
        problems,
    })
}

/// Waits until frames stop arriving; true if `DRAIN_MAX` passed first.
async fn drain(clients: &Clients) -> bool {
    let start = Instant::now();
    let mut seen = clients.frames_seen();
    let mut changed = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = clients.frames_seen();
        if now != seen {
            seen = now;
            changed = Instant::now();
        } else if changed.elapsed() >= DRAIN_QUIET {
            return false;
        }
        if start.elapsed() >= DRAIN_MAX {
            return true;
        }
    }
}
