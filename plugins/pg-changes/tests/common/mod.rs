//! What the PostgreSQL tests of pg-changes and user-tasks share (user-tasks includes this file
//! by path): the test database with a schema of each test's own, and a source run on a thread
//! the way the engine runs it, with an emitter that records what it is handed.
//!
//! The database: `TAGCAST_TEST_PG_URL`, else `postgres://postgres@127.0.0.1:5432/test`. When
//! it cannot be reached, a test skips with a printed reason, unless the URL was given or
//! `CI=true`: then it fails.

// Each test crate uses its own part of this file.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use abi_stable::sabi_trait::TD_Opaque;
use tagcast_plugin_api::abi::{ChangeAbi, EmitStatus, EmitterAbi, EmitterAbi_TO};
use tagcast_plugin_api::{Error, Op, Source, SourceContext};
use tokio::runtime::Runtime;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// How long a test waits for something the source should do soon. Only reached when the
/// feature is broken; a slow machine finishes far sooner.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A connection to the test database and a schema no other test uses.
pub struct TestDb {
    rt: Runtime,
    client: Client,
    /// The database URL, without the source's application name.
    pub url: String,
    /// This test's own schema: the outbox's, and the home of its tables.
    pub schema: String,
    /// Whether dropping this drops the schema: true for the first connection only.
    owns_schema: bool,
}

impl TestDb {
    /// Connects and creates a fresh schema named after `test`; `None` (with the reason
    /// printed) when the default database is unreachable outside CI.
    pub fn connect(test: &str) -> Option<TestDb> {
        let given = std::env::var("TAGCAST_TEST_PG_URL").ok();
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        let url = given.clone().unwrap_or_else(|| DEFAULT_URL.to_owned());
        let (rt, client) = match connect(&url) {
            Ok(pair) => pair,
            Err(err) if given.is_none() && !ci => {
                eprintln!(
                    "skipping {test}: no PostgreSQL at {url} ({err}); set TAGCAST_TEST_PG_URL"
                );
                return None;
            }
            Err(err) => panic!("the test database {url} is unreachable: {err}"),
        };
        let schema = unique_name(test);
        let db = TestDb {
            rt,
            client,
            url,
            schema,
            owns_schema: true,
        };
        db.exec(&format!("CREATE SCHEMA {}", db.schema));
        Some(db)
    }

    /// Another connection to the same database, for a second thread.
    pub fn another(&self) -> TestDb {
        let (rt, client) = connect(&self.url).expect("the test database answered a moment ago");
        TestDb {
            rt,
            client,
            url: self.url.clone(),
            schema: self.schema.clone(),
            owns_schema: false,
        }
    }

    /// The URL a source of this test connects with: the application name lets the test find
    /// (and kill) the source's connections.
    pub fn source_url(&self, application: &str) -> String {
        let sep = if self.url.contains('?') { '&' } else { '?' };
        format!("{}{sep}application_name={application}", self.url)
    }

    /// Runs SQL statements; panics with the database's message on failure.
    pub fn exec(&self, sql: &str) {
        if let Err(err) = self.rt.block_on(self.client.batch_execute(sql)) {
            panic!("{sql}: {}", describe(&err));
        }
    }

    /// Runs a query; panics with the database's message on failure.
    pub fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Vec<Row> {
        self.rt
            .block_on(self.client.query(sql, params))
            .unwrap_or_else(|err| panic!("{sql}: {}", describe(&err)))
    }

    /// Runs SQL and returns the connection's error instead of panicking.
    pub fn try_exec(&self, sql: &str) -> Result<(), String> {
        self.rt
            .block_on(self.client.batch_execute(sql))
            .map_err(|err| describe(&err))
    }

    /// Waits until `sql` (returning one boolean) is true; panics after [`PATIENCE`].
    pub fn wait_until(&self, sql: &str) {
        let deadline = Instant::now() + PATIENCE;
        while !self.query(sql, &[])[0].get::<_, bool>(0) {
            assert!(
                Instant::now() < deadline,
                "still false after {PATIENCE:?}: {sql}"
            );
            // A poll of the condition, not a guess at how long it takes.
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Terminates every connection with this application name, and waits until they are
    /// gone, so that the source's next statement surely fails. Returns how many there were.
    pub fn kill(&self, application: &str) -> usize {
        let rows = self.query(
            "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            &[&application],
        );
        let pids: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = self.query(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)",
                &[&pids],
            );
            if left[0].get::<_, i64>(0) == 0 {
                return pids.len();
            }
            assert!(
                Instant::now() < deadline,
                "terminated backends {pids:?} did not exit"
            );
            // A poll of the condition, not a guess at how long it takes.
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Only the connection that made the schema drops it; a failed drop leaves a uniquely
        // named schema behind, which harms no other run.
        if self.owns_schema && !std::thread::panicking() {
            let _ = self.rt.block_on(
                self.client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema)),
            );
        }
    }
}

fn connect(url: &str) -> Result<(Runtime, Client), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| err.to_string())?;
    // The timer must be made inside the runtime.
    let connecting =
        async { tokio::time::timeout(Duration::from_secs(10), url_connect(url)).await };
    let (client, connection) = rt
        .block_on(connecting)
        .map_err(|_| "timed out".to_owned())?
        .map_err(|err| describe(&err))?;
    rt.spawn(connection);
    Ok((rt, client))
}

async fn url_connect(
    url: &str,
) -> Result<
    (
        Client,
        tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>,
    ),
    tokio_postgres::Error,
> {
    tokio_postgres::connect(url, NoTls).await
}

fn describe(err: &tokio_postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => format!("{err:?}"),
    }
}

/// A lowercase name no other test or run uses: the test's name, the process and a counter.
pub fn unique_name(test: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let short: String = test
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(16)
        .collect();
    format!(
        "t_{}_{}_{}_{}",
        short.to_ascii_lowercase(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos % 100_000
    )
}

/// A change as the test emitter received it.
#[derive(Clone, Debug, PartialEq)]
pub struct Received {
    /// What happened.
    pub op: Op,
    /// The change data, as JSON.
    pub data: serde_json::Value,
    /// Who made it.
    pub author: Option<String>,
}

/// Called by the emitter after it accepted the n-th change (from 1), on the source's thread.
pub type Hook = Arc<dyn Fn(usize, &StopSignal) + Send + Sync>;

/// The engine's stop request, as the test emitter sees it.
#[derive(Default)]
pub struct StopSignal {
    stopped: Mutex<bool>,
    changed: Condvar,
}

impl StopSignal {
    /// Asks the source to stop.
    pub fn stop(&self) {
        *self.stopped.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.changed.notify_all();
    }

    fn is_stopped(&self) -> bool {
        *self.stopped.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait(&self, timeout: Duration) -> bool {
        let guard = self.stopped.lock().unwrap_or_else(PoisonError::into_inner);
        let (guard, _) = self
            .changed
            .wait_timeout_while(guard, timeout, |stopped| !*stopped)
            .unwrap_or_else(PoisonError::into_inner);
        *guard
    }
}

/// The engine's side of a running source, for tests: accepts every change into a channel.
struct TestEmitter {
    changes: Sender<Received>,
    stop: Arc<StopSignal>,
    accepted: AtomicUsize,
    hook: Option<Hook>,
}

impl EmitterAbi for TestEmitter {
    fn emit(&self, change: ChangeAbi) -> EmitStatus {
        if self.stop.is_stopped() {
            return EmitStatus::Stopped;
        }
        let received = Received {
            op: change.op,
            data: serde_json::from_str(&change.data.to_json_string())
                .expect("Data always serializes to valid JSON"),
            author: change.author.into_option().map(String::from),
        };
        // The receiver lives as long as the test that reads it.
        let _ = self.changes.send(received);
        let n = self.accepted.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(hook) = &self.hook {
            hook(n, &self.stop);
        }
        EmitStatus::Accepted
    }

    fn is_stopped(&self) -> bool {
        self.stop.is_stopped()
    }

    fn wait_stopped(&self, timeout_ms: u64) -> bool {
        self.stop.wait(Duration::from_millis(timeout_ms))
    }
}

/// A source running on its own thread, as the engine runs it.
pub struct RunningSource {
    stop: Arc<StopSignal>,
    changes: Receiver<Received>,
    /// Disconnected once the source's thread ends, however it ends.
    ended: Receiver<()>,
    thread: Option<JoinHandle<Result<(), Error>>>,
}

/// Dropped when the source's thread ends, returning or unwinding.
struct EndSignal(#[allow(dead_code)] Sender<()>);

impl RunningSource {
    /// Starts `source`; `hook`, if given, runs after each accepted change.
    pub fn start<S: Source>(mut source: S, hook: Option<Hook>) -> RunningSource {
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(StopSignal::default());
        let emitter = TestEmitter {
            changes: tx,
            stop: Arc::clone(&stop),
            accepted: AtomicUsize::new(0),
            hook,
        };
        let (end_tx, ended) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let _end = EndSignal(end_tx);
            let ctx = SourceContext::new(EmitterAbi_TO::from_value(emitter, TD_Opaque));
            source.run(&ctx)
        });
        RunningSource {
            stop,
            changes: rx,
            ended,
            thread: Some(thread),
        }
    }

    /// The next change; panics if none comes within [`PATIENCE`] or the source ended.
    pub fn next(&self) -> Received {
        match self.changes.recv_timeout(PATIENCE) {
            Ok(change) => change,
            Err(RecvTimeoutError::Timeout) => panic!("no change within {PATIENCE:?}"),
            Err(RecvTimeoutError::Disconnected) => {
                panic!("the source ended without handing on the expected change")
            }
        }
    }

    /// The next `n` changes.
    pub fn take(&self, n: usize) -> Vec<Received> {
        (0..n).map(|_| self.next()).collect()
    }

    /// Every change up to and including the first whose data `is_marker` accepts. With a
    /// marker row written after everything else, this is every change the source handed on
    /// before it: a repeat of an earlier row would show up here.
    pub fn until(&self, is_marker: impl Fn(&Received) -> bool) -> Vec<Received> {
        let mut all = Vec::new();
        loop {
            let change = self.next();
            let done = is_marker(&change);
            all.push(change);
            if done {
                return all;
            }
        }
    }

    /// Stops the source and returns what `run` returned; panics if it does not return
    /// within [`PATIENCE`] or panicked.
    pub fn stop(mut self) -> Result<(), Error> {
        self.finish()
    }

    /// Waits for `run` to return by itself (after an error, or a hook's stop request).
    pub fn join(mut self) -> Result<(), Error> {
        if let Err(RecvTimeoutError::Timeout) = self.ended.recv_timeout(PATIENCE) {
            panic!("the source did not return within {PATIENCE:?}");
        }
        let result = self.thread.take().map(JoinHandle::join);
        match result {
            Some(Ok(result)) => result,
            Some(Err(_)) => panic!("the source panicked"),
            None => Ok(()),
        }
    }

    fn finish(&mut self) -> Result<(), Error> {
        self.stop.stop();
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        if let Err(RecvTimeoutError::Timeout) = self.ended.recv_timeout(PATIENCE) {
            panic!("the source did not stop within {PATIENCE:?}");
        }
        match thread.join() {
            Ok(result) => result,
            Err(_) => panic!("the source panicked"),
        }
    }
}

impl Drop for RunningSource {
    fn drop(&mut self) {
        self.stop.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
