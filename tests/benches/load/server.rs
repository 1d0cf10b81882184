//! The server under test as a child process (tagcast, or the floor re-executed from this
//! binary), so that its memory and CPU time can be read from `/proc/<pid>` apart from the
//! load tool's own.
//!
//! Both print a JSON log line `{"fields":{"message":"listening","address":...}}` on stderr;
//! a thread reads stderr for the whole run, since a child blocked on a full pipe would
//! stall mid-measurement.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use clap::ValueEnum;

/// How long a server may take from spawn to its "listening" line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Warn and error lines kept for the report; the rest are only counted.
const KEPT_PROBLEM_LINES: usize = 5;

/// `/proc/<pid>/stat` counts CPU time in USER_HZ ticks, which Linux fixes at 100 for user
/// space on every architecture (sysconf(_SC_CLK_TCK) would need unsafe code for a constant).
const USER_HZ: u64 = 100;

/// Which server is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ServerKind {
    /// The minimal tokio-tungstenite server of this tool (`floor-server`).
    Floor,
    /// `tagcast serve` from the release build.
    Tagcast,
}

impl ServerKind {
    /// The name used in the report.
    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Floor => "floor",
            ServerKind::Tagcast => "tagcast",
        }
    }
}

/// Warn and error lines the server logged, for the report.
#[derive(Debug, Default, Clone)]
pub struct LogProblems {
    /// Lines at level WARN or ERROR, or not JSON at all (a panic message).
    pub count: u64,
    /// The first few of them.
    pub first: Vec<String>,
}

/// A running server child. Dropping it kills the child, so that no server outlives a run
/// that failed or panicked.
pub struct ServerProcess {
    /// The child; killed and reaped on drop.
    child: Child,
    /// Where it accepts WebSocket and HTTP connections.
    pub addr: SocketAddr,
    /// The generated tagcast config file, removed on drop.
    config_path: Option<PathBuf>,
    /// Filled by the stderr thread, which ends when the child closes stderr.
    problems: Arc<Mutex<LogProblems>>,
}

impl ServerProcess {
    /// Starts the floor (this binary with `floor-server`) or `tagcast serve` and waits for
    /// its "listening" line.
    pub fn spawn(kind: ServerKind, tagcast_bin: &Path) -> Result<ServerProcess> {
        let mut config_path = None;
        let mut command = match kind {
            ServerKind::Floor => {
                let exe = std::env::current_exe().context("cannot locate the load tool binary")?;
                let mut command = Command::new(exe);
                command.arg("floor-server");
                command
            }
            ServerKind::Tagcast => {
                if !tagcast_bin.is_file() {
                    bail!(
                        "no tagcast binary at {}: build it with `cargo build --release -p tagcast` \
                         or pass --tagcast-bin",
                        tagcast_bin.display()
                    );
                }
                let path = write_tagcast_config()?;
                let mut command = Command::new(tagcast_bin);
                command
                    .arg("serve")
                    .arg("--config")
                    .arg(&path)
                    .args(["--log-format", "json"]);
                config_path = Some(path);
                command
            }
        };

        // RUST_LOG from the caller's shell could turn on per-connection debug logs and
        // measure the logger; the server runs at its own default level.
        command.env_remove("RUST_LOG");
        // The floor exits when its stdin closes, which also covers this process dying.
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start the {} server", kind.name()))?;

        let stderr = child.stderr.take().context("child stderr was not piped")?;
        let problems = Arc::new(Mutex::new(LogProblems::default()));
        let (listening_tx, listening_rx) = mpsc::channel();
        let thread_problems = Arc::clone(&problems);
        thread::Builder::new()
            .name("server-stderr".into())
            .spawn(move || read_stderr(stderr, &listening_tx, &thread_problems))
            .context("cannot start the stderr reader thread")?;

        let mut server = ServerProcess {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            config_path,
            problems,
        };
        server.addr = match listening_rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(addr) => addr,
            Err(mpsc::RecvTimeoutError::Timeout) => bail!(
                "the {} server printed no \"listening\" log line within {STARTUP_TIMEOUT:?}; \
                 its warnings: {:?}",
                kind.name(),
                server.problems().first
            ),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = server.child.wait().ok();
                bail!(
                    "the {} server closed stderr before listening (exit: {status:?}); its last \
                     lines: {:?}",
                    kind.name(),
                    server.problems().first
                )
            }
        };
        Ok(server)
    }

    /// [`ServerProcess::spawn`] on a blocking thread, since it waits for the child's
    /// "listening" line with a blocking read.
    pub async fn start(kind: ServerKind, tagcast_bin: &Path) -> Result<ServerProcess> {
        let tagcast_bin = tagcast_bin.to_owned();
        tokio::task::spawn_blocking(move || ServerProcess::spawn(kind, &tagcast_bin))
            .await
            .context("the server start-up thread panicked")?
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident set size, from `VmRSS` in `/proc/<pid>/status`.
    pub fn rss_bytes(&self) -> Result<u64> {
        let path = format!("/proc/{}/status", self.pid());
        let status = fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        let kib = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().strip_suffix("kB"))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .with_context(|| format!("no VmRSS line in {path}"))?;
        Ok(kib * 1024)
    }

    /// CPU time of all the child's threads so far.
    pub fn cpu_time(&self) -> Result<CpuTime> {
        proc_cpu_time(&format!("/proc/{}/stat", self.pid()))
    }

    /// Warn and error lines logged so far.
    pub fn problems(&self) -> LogProblems {
        // A poisoned lock means the stderr thread panicked mid-update; its data is still
        // the best account there is.
        self.problems
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // SIGKILL: the measurement is over, and a graceful shutdown would only add closing
        // handshakes to thousands of sockets.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(path) = &self.config_path {
            let _ = fs::remove_file(path);
        }
    }
}

/// CPU time (user + system) of this process, for the load tool's own share of the machine.
pub fn self_cpu_time() -> Result<CpuTime> {
    proc_cpu_time("/proc/self/stat")
}

/// How long ago `path` was modified, to flag a stale tagcast build in the report.
pub fn age_of(path: &Path) -> Option<Duration> {
    let modified = fs::metadata(path).ok()?.modified().ok()?;
    SystemTime::now().duration_since(modified).ok()
}

/// The default tagcast binary: beside the `deps/` folder this bench binary runs from, that
/// is `target/release/tagcast` (or the same under `CARGO_TARGET_DIR`).
pub fn default_tagcast_bin() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("tagcast")))
        .unwrap_or_else(|| PathBuf::from("target/release/tagcast"))
}

/// Writes the config for `tagcast serve`: an ephemeral loopback port, and a per-user
/// connection limit above any scenario's connections per user.
fn write_tagcast_config() -> Result<PathBuf> {
    let path = std::env::temp_dir().join(format!("tagcast-load-{}.toml", std::process::id()));
    let mut file =
        fs::File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(
        b"[server]\nlisten = \"127.0.0.1:0\"\n\n[limits]\nmax_connections_per_user = 100000\n",
    )
    .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// Reads the child's stderr to its end: reports the "listening" address once, and counts
/// the lines that show trouble.
fn read_stderr(
    stderr: std::process::ChildStderr,
    listening: &mpsc::Sender<SocketAddr>,
    problems: &Mutex<LogProblems>,
) {
    let mut announced = false;
    for line in BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        let parsed: Option<serde_json::Value> = serde_json::from_str(&line).ok();
        if !announced {
            let address = parsed
                .as_ref()
                .filter(|v| v["fields"]["message"] == "listening")
                .and_then(|v| v["fields"]["address"].as_str())
                .and_then(|a| a.parse::<SocketAddr>().ok());
            if let Some(address) = address {
                announced = true;
                let _ = listening.send(address);
                continue;
            }
        }
        let level = parsed
            .as_ref()
            .and_then(|v| v["level"].as_str().map(str::to_owned));
        let is_problem = match level.as_deref() {
            Some(level) => {
                level.eq_ignore_ascii_case("warn") || level.eq_ignore_ascii_case("error")
            }
            None => !line.trim().is_empty(),
        };
        if is_problem {
            let mut problems = problems
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            problems.count += 1;
            if problems.first.len() < KEPT_PROBLEM_LINES {
                problems.first.push(line);
            }
        }
    }
}

/// CPU time of a process, split as the kernel accounts it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTime {
    /// In user space.
    pub user: Duration,
    /// In the kernel. Over loopback this includes much of the TCP work of the receiving
    /// side too, which runs in the context of the sending process.
    pub system: Duration,
}

impl CpuTime {
    /// User plus system time.
    pub fn total(self) -> Duration {
        self.user + self.system
    }
}

impl std::ops::Sub for CpuTime {
    type Output = CpuTime;

    fn sub(self, earlier: CpuTime) -> CpuTime {
        CpuTime {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }
}

/// Fields 14 and 15 (utime, stime) of a `/proc/.../stat` file.
fn proc_cpu_time(path: &str) -> Result<CpuTime> {
    let stat = fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?;
    // The command name (field 2) is in parentheses and may hold spaces; fields after the
    // last ')' start at field 3.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow!("{path}: no ')'"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .with_context(|| format!("{path}: field {} is missing or not a number", i + 3))
    };
    let to_duration = |ticks: u64| Duration::from_millis(ticks * 1_000 / USER_HZ);
    Ok(CpuTime {
        user: to_duration(tick(11)?),
        system: to_duration(tick(12)?),
    })
}
