//! The source supervisor: runs every enabled event source on a thread of its own, restarts
//! one that fails or panics with exponential backoff, and stops them all within a deadline
//! on shutdown.
//!
//! Data flow: a source calls `emit` on its thread; the [`Emitter`] blocks on a bounded
//! channel (back-pressure: nothing is dropped) whose receiver, the relay task on the async
//! runtime, runs each change through the same [`Publisher`] as `POST /v1/changes`.
//!
//! Owners: each source thread owns its source object; the supervisor owns the stop signal,
//! the threads' join handles and the per-source status; the relay task owns the receiver
//! and ends when every emitter is gone.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::ROption;
use tagcast_plugin_api::abi::{
    ChangeAbi, EmitStatus, EmitterAbi, EmitterAbi_TO, PluginError, SourceBox,
};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::config::{LoadedConfig, SourcesConfig};
use crate::metrics::Exposition;
use crate::plugins::{settings_error, Registry};
use crate::publish::Publisher;
use crate::StartError;

/// The live status of one source, shared by its thread and `/readyz` and `/metrics`.
struct Status {
    /// The plugin's name.
    name: String,
    /// True while the source is inside `run`.
    up: AtomicBool,
    /// Changes accepted from it.
    changes: AtomicU64,
    /// Restarts after a failure.
    restarts: AtomicU64,
    /// The last failure, for `/readyz` and `/metrics`.
    last_error: Mutex<Option<String>>,
}

/// Asks sources to stop: a flag for polling, a condition variable for waiting.
#[derive(Default)]
struct Stop {
    stopped: Mutex<bool>,
    changed: Condvar,
    /// Mirrors `stopped` for lock-free polling.
    flag: AtomicBool,
}

impl Stop {
    fn request(&self) {
        let mut stopped = self.stopped.lock().unwrap_or_else(|e| e.into_inner());
        *stopped = true;
        self.flag.store(true, Ordering::SeqCst);
        self.changed.notify_all();
    }

    fn is_stopped(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Waits up to `timeout`; true if a stop was requested.
    fn wait(&self, timeout: Duration) -> bool {
        let stopped = self.stopped.lock().unwrap_or_else(|e| e.into_inner());
        let (stopped, _) = self
            .changed
            .wait_timeout_while(stopped, timeout, |s| !*s)
            .unwrap_or_else(|e| e.into_inner());
        *stopped
    }
}

/// The host's side of a running source, handed to the plugin.
struct Emitter {
    status: Arc<Status>,
    queue: mpsc::Sender<ChangeAbi>,
    stop: Arc<Stop>,
}

impl EmitterAbi for Emitter {
    fn emit(&self, change: ChangeAbi) -> EmitStatus {
        if self.stop.is_stopped() {
            return EmitStatus::Stopped;
        }
        // Source threads are plain threads outside the runtime, where blocking is allowed;
        // the relay task drains the queue until every source thread has ended.
        // Counted before the hand-over, so the count never trails what was published.
        self.status.changes.fetch_add(1, Ordering::SeqCst);
        match self.queue.blocking_send(change) {
            Ok(()) => EmitStatus::Accepted,
            Err(_) => {
                self.status.changes.fetch_sub(1, Ordering::SeqCst);
                EmitStatus::Stopped
            }
        }
    }

    fn is_stopped(&self) -> bool {
        self.stop.is_stopped()
    }

    fn wait_stopped(&self, timeout_ms: u64) -> bool {
        self.stop.wait(Duration::from_millis(timeout_ms))
    }
}

/// Runs and watches every source.
pub struct Supervisor {
    statuses: Vec<Arc<Status>>,
    stop: Arc<Stop>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    deadline: Duration,
}

impl Supervisor {
    /// Starts a thread for every enabled plugin that provides a source. Each source is
    /// built once here, so that bad settings are a start-up error.
    pub fn start(
        config: &LoadedConfig,
        registry: &Registry,
        publisher: Publisher,
        runtime: tokio::runtime::Handle,
    ) -> Result<Supervisor, StartError> {
        let mut specs = Vec::new();
        for plugin in registry.plugins().iter().filter(|p| p.source) {
            let factory = plugin.source_factory();
            let first = factory
                .new_source()
                .map_err(|err| settings_error(config, &plugin.name, &err))?;
            specs.push(SourceSpec {
                name: plugin.name.clone(),
                first,
                build: Box::new(move || factory.new_source()),
            });
        }
        Supervisor::spawn(specs, config.config.sources.clone(), publisher, runtime)
    }

    /// Starts a thread for each source in `specs`.
    pub fn spawn(
        specs: Vec<SourceSpec>,
        settings: SourcesConfig,
        publisher: Publisher,
        runtime: tokio::runtime::Handle,
    ) -> Result<Supervisor, StartError> {
        let stop = Arc::new(Stop::default());
        let (queue, receiver) = mpsc::channel(settings.queue);
        let mut statuses = Vec::new();
        let mut threads = Vec::new();
        for spec in specs {
            let status = Arc::new(Status {
                name: spec.name.clone(),
                up: AtomicBool::new(false),
                changes: AtomicU64::new(0),
                restarts: AtomicU64::new(0),
                last_error: Mutex::new(None),
            });
            let runner = Runner {
                build: spec.build,
                status: status.clone(),
                stop: stop.clone(),
                queue: queue.clone(),
                settings: settings.clone(),
            };
            let first = spec.first;
            let thread = std::thread::Builder::new()
                .name(format!("source-{}", spec.name))
                .spawn(move || runner.run(first))
                .map_err(|source| StartError::Io {
                    what: "cannot start a source thread",
                    source,
                })?;
            info!(source = %spec.name, "source started");
            statuses.push(status);
            threads.push(thread);
        }
        drop(queue);
        runtime.spawn(relay(receiver, publisher));
        Ok(Supervisor {
            statuses,
            stop,
            threads: Mutex::new(threads),
            deadline: Duration::from_millis(settings.shutdown_deadline_ms),
        })
    }

    /// A readable reason for every source that is not running now.
    pub fn down(&self) -> Vec<String> {
        self.statuses
            .iter()
            .filter(|s| !s.up.load(Ordering::SeqCst))
            .map(
                |s| match &*s.last_error.lock().unwrap_or_else(|e| e.into_inner()) {
                    Some(err) => format!("source `{}` is down: {err}", s.name),
                    None => format!("source `{}` is starting", s.name),
                },
            )
            .collect()
    }

    /// Appends the per-source metrics.
    pub fn render_metrics(&self, e: &mut Exposition) {
        /// Name, type, help, and the value of one source.
        type Family = (&'static str, &'static str, &'static str, fn(&Status) -> u64);
        let families: [Family; 3] = [
            (
                "tagcast_source_up",
                "gauge",
                "1 while the source runs, 0 while it is down.",
                |s| u64::from(s.up.load(Ordering::SeqCst)),
            ),
            (
                "tagcast_source_changes_total",
                "counter",
                "Changes accepted from the source.",
                |s| s.changes.load(Ordering::Relaxed),
            ),
            (
                "tagcast_source_restarts_total",
                "counter",
                "Restarts after the source failed.",
                |s| s.restarts.load(Ordering::Relaxed),
            ),
        ];
        for (name, kind, help, value) in families {
            e.family(name, kind, help);
            for s in &self.statuses {
                e.labelled(name, "source", &s.name, value(s));
            }
        }
        e.family(
            "tagcast_source_last_error_info",
            "gauge",
            "The source's last failure, in the `error` label.",
        );
        for s in &self.statuses {
            if let Some(err) = &*s.last_error.lock().unwrap_or_else(|e| e.into_inner()) {
                e.labelled2(
                    "tagcast_source_last_error_info",
                    ("source", &s.name),
                    ("error", err),
                    1,
                );
            }
        }
    }

    /// Asks every source to stop and waits for their threads, up to the deadline.
    pub async fn shutdown(&self) {
        self.stop.request();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        if threads.is_empty() {
            return;
        }
        let joined = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        });
        match tokio::time::timeout(self.deadline, joined).await {
            Ok(_) => info!("sources stopped"),
            Err(_) => {
                let running: Vec<&str> = self
                    .statuses
                    .iter()
                    .filter(|s| s.up.load(Ordering::SeqCst))
                    .map(|s| s.name.as_str())
                    .collect();
                error!(sources = ?running, deadline_ms = self.deadline.as_millis() as u64,
                    "sources did not stop within the deadline; exiting without them");
            }
        }
    }
}

/// Hands emitted changes to the publisher until every emitter is dropped.
async fn relay(mut receiver: mpsc::Receiver<ChangeAbi>, publisher: Publisher) {
    while let Some(change) = receiver.recv().await {
        let author = match &change.author {
            ROption::RSome(a) => Some(a.as_str()),
            ROption::RNone => None,
        };
        publisher.publish_change(author, change.op, &change.data);
    }
}

/// A source to supervise: its first instance, and how to build another after a failure.
pub struct SourceSpec {
    /// The source's name (its plugin's).
    pub name: String,
    /// The instance to run first.
    pub first: SourceBox,
    /// Builds a fresh instance; called on the source's thread after each failure.
    pub build: Box<dyn Fn() -> Result<SourceBox, PluginError> + Send>,
}

/// One source's thread.
struct Runner {
    build: Box<dyn Fn() -> Result<SourceBox, PluginError> + Send>,
    status: Arc<Status>,
    stop: Arc<Stop>,
    queue: mpsc::Sender<ChangeAbi>,
    settings: SourcesConfig,
}

impl Runner {
    fn run(self, first: SourceBox) {
        let name = self.status.name.clone();
        let mut next = Some(first);
        let mut failures: u32 = 0;
        while !self.stop.is_stopped() {
            let mut source = match next.take() {
                Some(source) => source,
                None => match (self.build)() {
                    Ok(source) => source,
                    Err(err) => {
                        self.failed(&name, &mut failures, err.to_string());
                        continue;
                    }
                },
            };
            let emitter = EmitterAbi_TO::from_value(
                Emitter {
                    status: self.status.clone(),
                    queue: self.queue.clone(),
                    stop: self.stop.clone(),
                },
                TD_Opaque,
            );
            let started = Instant::now();
            self.status.up.store(true, Ordering::SeqCst);
            let result = source.run(emitter).into_result();
            self.status.up.store(false, Ordering::SeqCst);
            drop(source);
            if started.elapsed() >= Duration::from_millis(self.settings.restart_reset_ms) {
                failures = 0;
            }
            match result {
                Ok(()) if self.stop.is_stopped() => break,
                Ok(()) => self.failed(
                    &name,
                    &mut failures,
                    "returned without being asked to stop".to_owned(),
                ),
                Err(err) => self.failed(&name, &mut failures, err.to_string()),
            }
        }
        info!(
            source = %name,
            changes = self.status.changes.load(Ordering::SeqCst),
            restarts = self.status.restarts.load(Ordering::SeqCst),
            "source stopped"
        );
    }

    /// Records a failure and waits out the backoff (or a stop request).
    fn failed(&self, name: &str, failures: &mut u32, error: String) {
        *failures = failures.saturating_add(1);
        self.status.restarts.fetch_add(1, Ordering::Relaxed);
        let delay = backoff(&self.settings, *failures);
        warn!(source = %name, error = %error, retry_in_ms = delay.as_millis() as u64,
            "source failed; restarting after backoff");
        *self
            .status
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(error);
        self.stop.wait(delay);
    }
}

/// The delay before restart number `failures` (1-based): doubling from the initial delay,
/// capped at the maximum.
fn backoff(settings: &SourcesConfig, failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(30);
    let ms = settings
        .restart_initial_ms
        .saturating_mul(1u64 << exponent)
        .min(settings.restart_max_ms.max(settings.restart_initial_ms));
    Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::sync::mpsc as std_mpsc;

    use tagcast_plugin_api::__private::{build_generator, build_source};
    use tagcast_plugin_api::{
        Change, Data, Error, Generator, Op, Options, Source, SourceContext, Tags, Value,
    };

    use super::*;
    use crate::chain::Chain;
    use crate::hub::{Hub, Mailbox};
    use crate::identity::Identity;

    #[derive(serde::Deserialize)]
    struct NoSettings {}

    /// Tags `{"tag": "x"}` as `x`.
    struct TagField;

    impl Generator for TagField {
        fn supports(&self, data: Value<'_>) -> bool {
            data.get("tag").is_some()
        }

        fn generate(&self, data: Value<'_>, _: Options, tags: &mut Tags) -> Result<(), Error> {
            tags.push(data.get("tag").and_then(|t| t.as_str()).unwrap_or_default());
            Ok(())
        }
    }

    /// Panics on its first `panics` runs (counted across rebuilds), then emits one change and
    /// waits to be stopped. Reports the start of every run.
    struct Flaky {
        runs: Arc<AtomicUsize>,
        panics: usize,
        started: std_mpsc::Sender<Instant>,
    }

    impl Source for Flaky {
        fn run(&mut self, ctx: &SourceContext) -> Result<(), Error> {
            let _ = self.started.send(Instant::now());
            let run = self.runs.fetch_add(1, Ordering::SeqCst);
            if run < self.panics {
                panic!("flaky source failed on run {run}");
            }
            let change = Change {
                op: Op::Update,
                data: Data::from_json_str(r#"{"tag": "t"}"#).expect("valid JSON"),
                author: None,
            };
            if ctx.emit(change).is_err() {
                return Ok(());
            }
            while !ctx.wait_stopped(Duration::from_secs(60)) {}
            Ok(())
        }
    }

    fn settings(initial_ms: u64, deadline_ms: u64) -> SourcesConfig {
        SourcesConfig {
            restart_initial_ms: initial_ms,
            restart_max_ms: 10_000,
            shutdown_deadline_ms: deadline_ms,
            ..SourcesConfig::default()
        }
    }

    fn publisher(hub: &Arc<Hub>) -> Publisher {
        let generator = build_generator("tag-field", "", |_: NoSettings| Ok(TagField)).unwrap();
        let chain = Chain::from_generators(vec![("tag-field".to_owned(), generator)]);
        Publisher::new(Arc::new(chain), hub.clone())
    }

    fn flaky_spec(
        panics: usize,
        started: std_mpsc::Sender<Instant>,
    ) -> (SourceSpec, Arc<AtomicUsize>) {
        let runs = Arc::new(AtomicUsize::new(0));
        let make = {
            let runs = runs.clone();
            move || {
                let (runs, started) = (runs.clone(), started.clone());
                build_source("flaky", "", move |_: NoSettings| {
                    Ok(Flaky {
                        runs,
                        panics,
                        started,
                    })
                })
                .map_err(|e| PluginError {
                    plugin: "flaky".into(),
                    kind: e.kind(),
                    message: e.message().into(),
                    key: ROption::RNone,
                })
            }
        };
        let spec = SourceSpec {
            name: "flaky".to_owned(),
            first: make().unwrap(),
            build: Box::new(make),
        };
        (spec, runs)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn panicking_source_is_restarted_with_backoff_and_its_changes_still_flow() {
        let hub = Arc::new(Hub::new(10));
        let conn = hub.register(&Identity::anonymous()).unwrap();
        hub.subscribe(&conn, &["t"], &mut Vec::new());
        let (started_tx, started) = std_mpsc::channel();
        let (spec, runs) = flaky_spec(3, started_tx);
        let supervisor = Supervisor::spawn(
            vec![spec],
            settings(20, 5_000),
            publisher(&hub),
            tokio::runtime::Handle::current(),
        )
        .unwrap();

        let starts: Vec<Instant> = tokio::task::spawn_blocking(move || {
            (0..4)
                .map(|_| {
                    started
                        .recv_timeout(Duration::from_secs(20))
                        .expect("the source runs again")
                })
                .collect()
        })
        .await
        .unwrap();
        // Backoff doubles: at least 20, 40, 80 ms between the four runs.
        for (i, pair) in starts.windows(2).enumerate() {
            let gap = pair[1] - pair[0];
            assert!(
                gap >= Duration::from_millis(20 << i),
                "restart {i} after only {gap:?}"
            );
        }

        tokio::time::timeout(Duration::from_secs(20), conn.signalled())
            .await
            .expect("the change arrives");
        match conn.take() {
            Mailbox::Frame(frame, _) => {
                assert_eq!(&*frame.text, r#"{"type":"outdated","tags":["t"]}"#)
            }
            _ => panic!("expected one frame"),
        }
        let status = &supervisor.statuses[0];
        assert_eq!(status.restarts.load(Ordering::SeqCst), 3);
        assert_eq!(status.changes.load(Ordering::SeqCst), 1);
        let last_error = status.last_error.lock().unwrap().clone().unwrap();
        assert!(
            last_error.contains("flaky source failed on run 2"),
            "{last_error}"
        );

        supervisor.shutdown().await;
        assert_eq!(runs.load(Ordering::SeqCst), 4);
        assert!(supervisor.threads.lock().unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_returns_within_the_deadline_even_if_a_source_ignores_it() {
        /// Never looks at the stop signal: says it started, then blocks until the test
        /// process ends.
        struct Stubborn(std_mpsc::Receiver<()>, std_mpsc::Sender<Instant>);
        impl Source for Stubborn {
            fn run(&mut self, _: &SourceContext) -> Result<(), Error> {
                let _ = self.1.send(Instant::now());
                let _ = self.0.recv();
                Ok(())
            }
        }
        let (_keep_blocked, blocked) = std_mpsc::channel::<()>();
        let blocked = Mutex::new(Some(blocked));
        let (started_tx, started) = std_mpsc::channel();
        let stubborn_started = started_tx.clone();
        let stubborn = build_source("stubborn", "", |_: NoSettings| {
            let blocked = blocked.lock().unwrap().take().expect("built once");
            Ok(Stubborn(blocked, stubborn_started))
        })
        .unwrap();
        let (polite, _) = flaky_spec(0, started_tx);
        let specs = vec![
            polite,
            SourceSpec {
                name: "stubborn".to_owned(),
                first: stubborn,
                build: Box::new(|| unreachable!("never rebuilt: it never fails")),
            },
        ];
        let hub = Arc::new(Hub::new(10));
        let supervisor = Supervisor::spawn(
            specs,
            settings(20, 300),
            publisher(&hub),
            tokio::runtime::Handle::current(),
        )
        .unwrap();
        // Both sources are inside `run` before shutdown begins.
        tokio::task::spawn_blocking(move || {
            for _ in 0..2 {
                started
                    .recv_timeout(Duration::from_secs(20))
                    .expect("both sources start");
            }
        })
        .await
        .unwrap();

        let began = Instant::now();
        supervisor.shutdown().await;
        let took = began.elapsed();
        assert!(
            took >= Duration::from_millis(300),
            "returned before the deadline: {took:?}"
        );
        assert!(took < Duration::from_secs(10), "shutdown hung for {took:?}");
        assert!(
            !supervisor.statuses[0].up.load(Ordering::SeqCst),
            "the polite source stopped"
        );
        assert!(
            supervisor.statuses[1].up.load(Ordering::SeqCst),
            "the stubborn one is still in run"
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let settings = SourcesConfig {
            restart_initial_ms: 100,
            restart_max_ms: 1_000,
            ..SourcesConfig::default()
        };
        let delays: Vec<u64> = (1..=6)
            .map(|n| backoff(&settings, n).as_millis() as u64)
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1_000, 1_000]);
        assert_eq!(backoff(&settings, u32::MAX).as_millis(), 1_000);
    }

    #[test]
    fn stop_wakes_a_waiting_source() {
        let stop = Arc::new(Stop::default());
        let waiter = {
            let stop = stop.clone();
            std::thread::spawn(move || stop.wait(Duration::from_secs(60)))
        };
        stop.request();
        assert!(waiter.join().unwrap());
        assert!(stop.is_stopped());
    }
}
