//! The load tool: drives tagcast (or the floor, a minimal hand-written server) with many
//! WebSocket subscribers and a steady stream of publishes over loopback, and prints memory
//! per connection, deliveries per second, publish-to-receipt latency, missing and
//! unexpected deliveries and server CPU time per delivery.
//!
//! ```text
//! cargo build --release -p tagcast          # the server under test
//! cargo bench -p tagcast-tests --bench load -- --scenario fanout --compare
//! ```
//!
//! The server runs as a child process (server.rs) so its figures come from /proc apart
//! from the load tool's; the floor is this binary re-executed with `floor-server`
//! (floor/). Without `--bench` on the command line, that is under `cargo test
//! --all-targets`, it runs a short self-check instead (smoke.rs).
//!
//! Errors: the whole tool is a binary's edge and no caller matches on its errors, so it
//! uses anyhow with context throughout rather than a thiserror enum per module.

// The report is this binary's output; progress goes to stderr.
#![allow(clippy::print_stdout)]

mod analysis;
mod clients;
mod floor;
mod publisher;
mod report;
mod run;
mod server;
mod smoke;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};

use crate::server::ServerKind;
use crate::workload::{Shape, Workload};

/// Descriptors the load tool needs besides one per connection: publishers, the runtime,
/// stdio, the child's pipes.
const SPARE_DESCRIPTORS: u64 = 64;

/// Preset workloads; every number can be overridden by its option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// 10,000 connections, 5 tags each, no publishing: server memory per connection.
    Memory,
    /// 2,000 connections of 200 users, 5 tags each of 500; 2,000 publishes/s for 10 s.
    Fanout,
    /// 2,000 connections all tracking one tag; 20 publishes/s for 10 s, each to everyone
    /// but the author's connections.
    Broadcast,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Memory => "memory",
            Scenario::Fanout => "fanout",
            Scenario::Broadcast => "broadcast",
        }
    }

    fn shape(self) -> Shape {
        let base = Shape {
            connections: 2_000,
            conns_per_user: 10,
            tags_per_conn: 5,
            tag_pool: 500,
            rate: 2_000,
            duration: Duration::from_secs(10),
            tags_per_publish: 1,
            publishers: 4,
            seed: 1,
        };
        match self {
            Scenario::Memory => Shape {
                connections: 10_000,
                rate: 0,
                duration: Duration::ZERO,
                ..base
            },
            Scenario::Fanout => base,
            // About the deliveries per second of fanout (1,990 per publish), in few publishes.
            Scenario::Broadcast => Shape {
                tags_per_conn: 1,
                tag_pool: 1,
                rate: 20,
                ..base
            },
        }
    }
}

/// Load tool for tagcast's WebSocket fan-out.
#[derive(Debug, Parser)]
#[command(
    name = "load",
    bin_name = "cargo bench -p tagcast-tests --bench load --"
)]
struct Cli {
    /// Preset workload.
    #[arg(long, value_enum, default_value_t = Scenario::Fanout)]
    scenario: Scenario,
    /// Server to measure.
    #[arg(long, value_enum, default_value_t = ServerKind::Tagcast)]
    server: ServerKind,
    /// Measure the floor, then tagcast, under the same workload; print ratios.
    #[arg(long)]
    compare: bool,
    /// WebSocket connections.
    #[arg(long)]
    connections: Option<u32>,
    /// Connections per user.
    #[arg(long)]
    conns_per_user: Option<u32>,
    /// Tags each connection subscribes to.
    #[arg(long)]
    tags_per_conn: Option<u32>,
    /// Number of distinct tags the subscriptions and publishes draw from.
    #[arg(long)]
    tag_pool: Option<u32>,
    /// Publishes per second (0: none).
    #[arg(long)]
    rate: Option<u32>,
    /// Seconds of publishing.
    #[arg(long)]
    duration: Option<u64>,
    /// Tags per publish.
    #[arg(long)]
    tags_per_publish: Option<u32>,
    /// HTTP keep-alive connections publishing.
    #[arg(long)]
    publishers: Option<u32>,
    /// Seed of the workload draw.
    #[arg(long)]
    seed: Option<u64>,
    /// The tagcast binary [default: target/release/tagcast].
    #[arg(long)]
    tagcast_bin: Option<PathBuf>,
    /// Passed by `cargo bench`; its absence selects the self-check.
    #[arg(long, hide = true)]
    bench: bool,
}

impl Cli {
    fn shape(&self) -> Shape {
        let preset = self.scenario.shape();
        Shape {
            connections: self.connections.unwrap_or(preset.connections),
            conns_per_user: self.conns_per_user.unwrap_or(preset.conns_per_user),
            tags_per_conn: self.tags_per_conn.unwrap_or(preset.tags_per_conn),
            tag_pool: self.tag_pool.unwrap_or(preset.tag_pool),
            rate: self.rate.unwrap_or(preset.rate),
            duration: self.duration.map_or(preset.duration, Duration::from_secs),
            tags_per_publish: self.tags_per_publish.unwrap_or(preset.tags_per_publish),
            publishers: self.publishers.unwrap_or(preset.publishers),
            seed: self.seed.unwrap_or(preset.seed),
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let result = if args.get(1).is_some_and(|a| a == "floor-server") {
        floor::main()
    } else if args.iter().any(|a| a == "--bench") {
        load(Cli::parse())
    } else {
        // `cargo test` passes its own arguments (filters, --nocapture): none are ours.
        runtime().and_then(|rt| rt.block_on(smoke::run()))
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("load: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")
}

fn load(cli: Cli) -> Result<()> {
    let shape = cli.shape();
    shape.validate()?;

    // Children inherit the limit, so tagcast and the floor can accept as many sockets.
    let limit =
        rlimit::increase_nofile_limit(u64::MAX).context("cannot raise the open-file limit")?;
    let needed = u64::from(shape.connections) + SPARE_DESCRIPTORS;
    if limit < needed {
        bail!(
            "{} connections need about {needed} open files but the limit is {limit}; \
             raise the hard limit (`ulimit -Hn`) or lower --connections",
            shape.connections
        );
    }

    let tagcast_bin = cli
        .tagcast_bin
        .clone()
        .unwrap_or_else(server::default_tagcast_bin);
    let servers: &[ServerKind] = if cli.compare {
        &[ServerKind::Floor, ServerKind::Tagcast]
    } else {
        std::slice::from_ref(&cli.server)
    };
    if servers.contains(&ServerKind::Tagcast) {
        match server::age_of(&tagcast_bin) {
            Some(age) => eprintln!(
                "tagcast binary {} built {} min ago: rebuild it (`cargo build --release -p \
                 tagcast`) if the source changed since",
                tagcast_bin.display(),
                age.as_secs() / 60
            ),
            None => bail!(
                "no tagcast binary at {}: build it with `cargo build --release -p tagcast` or \
                 pass --tagcast-bin",
                tagcast_bin.display()
            ),
        }
    }

    let workload = Arc::new(Workload::draw(shape));
    let runtime = runtime()?;
    let mut runs = Vec::new();
    for &kind in servers {
        runs.push(runtime.block_on(run::measure(kind, &workload, &tagcast_bin))?);
    }
    print!("{}", report::render(cli.scenario.name(), &shape, &runs));
    Ok(())
}
