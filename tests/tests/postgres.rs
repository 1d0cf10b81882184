//! End-to-end tests of the PostgreSQL sources: the engine binary runs pg-changes and
//! user-tasks against a real database while the tests write rows; WebSocket clients and
//! `/metrics` show what reached the engine and the browsers.
//!
//! The database: `TAGCAST_TEST_PG_URL`, else `postgres://postgres@127.0.0.1:5432/test`. When
//! that default cannot be reached, a test prints why and returns (a skip); under `CI=true`,
//! or with the variable set, it fails. Each test works in a schema of its own and gives its
//! sources consumer names of their own, so the tests run in parallel and can run again; the
//! schema is dropped at the end, and left behind for inspection when the test fails.
//!
//! "Never arrives" is checked with a barrier, as in serve.rs: after the change under test a
//! sentinel tag is published; frames to one connection keep their order, so the next frame
//! must be the sentinel's and nothing else.

use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tagcast_tests::engine::{Client, Engine};
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The tag every task insert and delete publishes.
const TASKS: &str = "App_Entity_Task_type_collection";
const SENTINEL: &str = "sentinel";
const CHANGES: &str = "tagcast_source_changes_total";
const RESTARTS: &str = "tagcast_source_restarts_total";

/// How long a test waits for something the engine should do soon. Only reached when the
/// feature is broken; a slow machine finishes far sooner.
const PATIENCE: Duration = Duration::from_secs(60);
/// The pause between two looks at a condition that has no notification (metrics, the log,
/// pg_stat_activity): a poll, not a guess at how long anything takes.
const POLL: Duration = Duration::from_millis(20);

/// A connection to the test database, a schema no other test uses with an empty tasks table
/// in it, and the consumer names this test's sources read with.
struct TestDb {
    client: tokio_postgres::Client,
    url: String,
    schema: String,
    /// The pg-changes source's consumer; its connection's application name is
    /// `tagcast pg-changes <consumer>` (set by the plugin when the URL names none).
    pg_changes_consumer: String,
    /// The user-tasks source's consumer. Both sources read the one outbox, each with its own
    /// cursor row and advisory lock, so the names must differ.
    user_tasks_consumer: String,
}

impl TestDb {
    /// Connects and creates the test's schema and tasks table; `None` (with the reason
    /// printed) when the default database is unreachable outside CI.
    async fn connect(test: &str) -> Option<TestDb> {
        let given = std::env::var("TAGCAST_TEST_PG_URL").ok();
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        let url = given.clone().unwrap_or_else(|| DEFAULT_URL.to_owned());
        let client = match connect(&url).await {
            Ok(client) => client,
            Err(err) if given.is_none() && !ci => {
                eprintln!(
                    "skipping {test}: no PostgreSQL at {url} ({err}); set TAGCAST_TEST_PG_URL"
                );
                return None;
            }
            Err(err) => panic!("the test database {url} is unreachable: {err}"),
        };
        let suffix = unique_suffix();
        let db = TestDb {
            client,
            url,
            schema: format!("t_e2e_{test}_{suffix}"),
            pg_changes_consumer: format!("pgc_{suffix}"),
            user_tasks_consumer: format!("ut_{suffix}"),
        };
        // The columns of user-tasks' sql/schema.sql that the tests use. Made here, not by
        // the sources' install, so that pg-changes finds the table on its first start
        // whichever source installs first (otherwise it fails once and is restarted).
        db.exec(&format!(
            "CREATE SCHEMA {s};
             CREATE TABLE {s}.tasks (
                 id bigserial PRIMARY KEY,
                 title text NOT NULL,
                 assignee_id bigint,
                 updated_by text
             )",
            s = db.schema
        ))
        .await;
        Some(db)
    }

    /// The engine configuration: entity-tags and user-tasks in the chain, both sources on
    /// this test's schema and tasks table, installing the outbox and triggers themselves.
    fn engine_config(&self) -> String {
        let url = toml_string(&self.url);
        let s = &self.schema;
        format!(
            r#"
[sources]
restart_initial_ms = 20
restart_max_ms = 1000

[chain]
generators = ["entity-tags", "user-tasks"]

[plugins.entity-tags]

[plugins.pg-changes]
[plugins.pg-changes.settings]
url = {url}
consumer = "{pgc}"
schema = "{s}"
install_schema = true

[[plugins.pg-changes.settings.tables]]
table = "{s}.tasks"
class = 'App\Entity\Task'
author_column = "updated_by"

[plugins.user-tasks]
[plugins.user-tasks.settings]
url = {url}
consumer = "{ut}"
schema = "{s}"
table = "{s}.tasks"
install_schema = true
"#,
            pgc = self.pg_changes_consumer,
            ut = self.user_tasks_consumer,
        )
    }

    /// The application name of the pg-changes source's connection.
    fn pg_changes_application(&self) -> String {
        format!("tagcast pg-changes {}", self.pg_changes_consumer)
    }

    /// Runs SQL statements; panics with the database's message on failure.
    async fn exec(&self, sql: &str) {
        if let Err(err) = self.client.batch_execute(sql).await {
            panic!("{sql}: {}", describe(&err));
        }
    }

    /// Runs a query; panics with the database's message on failure.
    async fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Vec<Row> {
        self.client
            .query(sql, params)
            .await
            .unwrap_or_else(|err| panic!("{sql}: {}", describe(&err)))
    }

    /// Inserts `rows` tasks in one transaction, with no author and no assignee.
    async fn insert_tasks(&self, rows: usize) {
        self.exec(&format!(
            "INSERT INTO {}.tasks (title) SELECT 'task ' || g FROM generate_series(1, {rows}) g",
            self.schema
        ))
        .await;
    }

    /// Terminates the backends named `application`, waiting first for one to exist (after
    /// an earlier kill the source reconnects with backoff) and then until they are gone, so
    /// that the source's next statement surely fails. Returns how many there were.
    async fn kill(&self, application: &str) -> usize {
        let deadline = Instant::now() + PATIENCE;
        let pids: Vec<i32> = loop {
            let rows = self
                .query(
                    "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE application_name = $1",
                    &[&application],
                )
                .await;
            if !rows.is_empty() {
                break rows.iter().map(|r| r.get(0)).collect();
            }
            assert!(
                Instant::now() < deadline,
                "no connection named `{application}` within {PATIENCE:?}"
            );
            tokio::time::sleep(POLL).await;
        };
        loop {
            let left = self
                .query(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)",
                    &[&pids],
                )
                .await;
            if left[0].get::<_, i64>(0) == 0 {
                return pids.len();
            }
            assert!(
                Instant::now() < deadline,
                "terminated backends {pids:?} did not exit"
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // A failed test leaves its uniquely named schema behind for inspection; it harms no
        // other run. The drop runs on a thread of its own: `Drop` cannot await, and the test's
        // runtime is single-threaded.
        if std::thread::panicking() {
            return;
        }
        let (url, schema) = (self.url.clone(), self.schema.clone());
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|err| err.to_string())?;
            rt.block_on(async {
                let client = connect(&url).await?;
                client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                    .await
                    .map_err(|err| describe(&err))
            })
        })
        .join();
        if let Ok(Err(err)) = dropped {
            eprintln!("could not drop the test schema {}: {err}", self.schema);
        }
    }
}

/// Connects, with the driver's connection task running on the current runtime.
async fn connect(url: &str) -> Result<tokio_postgres::Client, String> {
    let connecting = tokio_postgres::connect(url, NoTls);
    let (client, connection) = tokio::time::timeout(Duration::from_secs(10), connecting)
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|err| describe(&err))?;
    tokio::spawn(connection);
    Ok(client)
}

fn describe(err: &tokio_postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => format!("{err:?}"),
    }
}

/// A suffix no other test or run uses: the process, a counter and the clock.
fn unique_suffix() -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos % 100_000
    )
}

/// `text` as a TOML basic string: JSON's string escapes are valid TOML.
fn toml_string(text: &str) -> String {
    Value::String(text.to_owned()).to_string()
}

/// The `fields` of every JSON log line of `engine` so far.
fn log_fields(engine: &Engine) -> Vec<Value> {
    engine
        .logs()
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter_map(|mut record| record.get_mut("fields").map(Value::take))
        .collect()
}

/// Log lines a plugin sent with `message`.
fn plugin_logs(engine: &Engine, plugin: &str, message: &str) -> Vec<Value> {
    log_fields(engine)
        .into_iter()
        .filter(|f| f["plugin"] == plugin && f["message"] == message)
        .collect()
}

/// Waits until both sources have installed the outbox and triggers and read their cursor:
/// from then on every row change is captured and handed on.
async fn wait_until_reading(engine: &Engine, db: &TestDb) {
    let deadline = Instant::now() + PATIENCE;
    for (plugin, consumer) in [
        ("pg-changes", &db.pg_changes_consumer),
        ("user-tasks", &db.user_tasks_consumer),
    ] {
        let consumer_field = format!("consumer={consumer} ");
        while !plugin_logs(engine, plugin, "reading the outbox")
            .iter()
            .any(|f| {
                f["fields"]
                    .as_str()
                    .is_some_and(|s| s.contains(&consumer_field))
            })
        {
            assert!(
                Instant::now() < deadline,
                "{plugin} did not start reading within {PATIENCE:?}; the log:\n{}",
                engine.logs().join("\n")
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

/// A per-source sample of `/metrics`.
async fn source_metric(engine: &Engine, family: &str, source: &str) -> u64 {
    let (status, text) = engine.get("/metrics").await;
    assert_eq!(status, 200, "{text}");
    let prefix = format!("{family}{{source=\"{source}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no `{prefix}` sample in /metrics:\n{text}"))
}

/// Waits until the engine has accepted exactly `expected` changes from pg-changes, checking
/// on every look that the count never went past it.
async fn wait_for_pg_changes(engine: &Engine, expected: u64) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let accepted = source_metric(engine, CHANGES, "pg-changes").await;
        assert!(
            accepted <= expected,
            "pg-changes handed on {accepted} changes where {expected} were written: \
             a change was repeated"
        );
        if accepted == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {accepted} of {expected} changes arrived within {PATIENCE:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Publishes the sentinel and checks it is the next (and only) thing each client receives.
async fn assert_nothing_before_sentinel(engine: &Engine, clients: &mut [&mut Client]) {
    let (status, reply) = engine
        .post("/v1/publish", &json!({"tags": [SENTINEL]}))
        .await;
    assert_eq!(status, 200, "{reply}");
    for client in clients {
        assert_eq!(client.next_outdated().await, [SENTINEL]);
    }
}

/// Reads `outdated` frames until one lists `tag`; returns every frame read.
async fn frames_until(client: &mut Client, tag: &str) -> Vec<Vec<String>> {
    let mut frames = Vec::new();
    loop {
        let tags = client.next_outdated().await;
        let done = tags.iter().any(|t| t == tag);
        frames.push(tags);
        if done {
            return frames;
        }
    }
}

/// Sends SIGTERM and waits for the engine to exit; returns its exit status and its whole
/// log. `Engine::terminate` takes the engine and its log with it, so the signal goes first
/// from here, the log is read once the engine logs its last line, and `terminate` then only
/// reaps the exited process (a second SIGTERM to a process not yet reaped is harmless).
fn terminate_with_logs(engine: Engine) -> (ExitStatus, Vec<String>) {
    let sent = Command::new("kill")
        .args(["-TERM", &engine.pid().to_string()])
        .status()
        .expect("kill runs");
    assert!(sent.success(), "kill -TERM failed");
    let deadline = Instant::now() + PATIENCE;
    while !log_fields(&engine)
        .iter()
        .any(|f| f["message"] == "shut down")
    {
        assert!(
            Instant::now() < deadline,
            "the engine did not shut down within {PATIENCE:?}; its log:\n{}",
            engine.logs().join("\n")
        );
        // A poll of the log, which has no notification.
        std::thread::sleep(POLL);
    }
    let logs = engine.logs();
    (engine.terminate(), logs)
}

#[tokio::test]
async fn row_changes_reach_subscribers_of_their_tags_and_never_their_author() {
    let Some(db) = TestDb::connect("rows").await else {
        return;
    };
    let s = db.schema.clone();
    let engine = Engine::start(&db.engine_config());
    let task = "App_Entity_Task_1";
    let mut bob = Client::connect(&engine, Some("bob")).await;
    let mut alice = Client::connect(&engine, Some("alice")).await;
    for client in [&mut bob, &mut alice] {
        client.subscribe(&[task, TASKS, SENTINEL]).await;
    }
    wait_until_reading(&engine, &db).await;

    // Each change is waited for before the next is made, so no two share a frame. The author
    // comes from the session setting (insert, delete) or the row's author column (update).
    db.exec(&format!(
        "BEGIN; SET LOCAL tagcast.author = 'alice';
         INSERT INTO {s}.tasks (title) VALUES ('write the docs'); COMMIT"
    ))
    .await;
    assert_eq!(bob.next_outdated().await, [task, TASKS], "insert");

    db.exec(&format!(
        "UPDATE {s}.tasks SET title = 'write the docs again', updated_by = 'alice' WHERE id = 1"
    ))
    .await;
    assert_eq!(
        bob.next_outdated().await,
        [task],
        "an update outdates the task, not the collection"
    );

    db.exec(&format!(
        "BEGIN; SET LOCAL tagcast.author = 'alice'; DELETE FROM {s}.tasks WHERE id = 1; COMMIT"
    ))
    .await;
    assert_eq!(bob.next_outdated().await, [task, TASKS], "delete");

    // Alice made all three: none of them reached her. Bob got nothing more than the three.
    assert_nothing_before_sentinel(&engine, &mut [&mut alice, &mut bob]).await;
}

#[tokio::test]
async fn a_reassignment_tells_both_assignees_and_not_its_author() {
    let Some(db) = TestDb::connect("reassign").await else {
        return;
    };
    let s = db.schema.clone();
    let engine = Engine::start(&db.engine_config());
    // Users 7 and 8 each watch their own task list; carol, who assigns the work, watches
    // both lists and the task itself.
    let mut user7 = Client::connect(&engine, Some("dave")).await;
    user7.subscribe(&["user_tasks_7", SENTINEL]).await;
    let mut user8 = Client::connect(&engine, Some("erin")).await;
    user8.subscribe(&["user_tasks_8", SENTINEL]).await;
    let mut carol = Client::connect(&engine, Some("carol")).await;
    carol
        .subscribe(&[
            "user_tasks_7",
            "user_tasks_8",
            "App_Entity_Task_1",
            SENTINEL,
        ])
        .await;
    wait_until_reading(&engine, &db).await;

    db.exec(&format!(
        "BEGIN; SET LOCAL tagcast.author = 'carol';
         INSERT INTO {s}.tasks (title, assignee_id) VALUES ('write the docs', 7); COMMIT"
    ))
    .await;
    assert_eq!(user7.next_outdated().await, ["user_tasks_7"], "assigned");

    db.exec(&format!(
        "BEGIN; SET LOCAL tagcast.author = 'carol';
         UPDATE {s}.tasks SET assignee_id = 8 WHERE id = 1; COMMIT"
    ))
    .await;
    assert_eq!(user7.next_outdated().await, ["user_tasks_7"], "taken away");
    assert_eq!(user8.next_outdated().await, ["user_tasks_8"], "given");

    // Carol's connection heard of neither change, from either source; the users of nothing
    // more than the above.
    assert_nothing_before_sentinel(&engine, &mut [&mut carol, &mut user7, &mut user8]).await;
}

#[tokio::test]
async fn killed_source_connections_lose_and_repeat_none_of_a_thousand_rows() {
    let Some(db) = TestDb::connect("kill").await else {
        return;
    };
    let s = db.schema.clone();
    let engine = Engine::start(&db.engine_config());
    let (last, marker) = ("App_Entity_Task_1000", "App_Entity_Task_1001");
    let mut list = Client::connect(&engine, None).await;
    list.subscribe(&[TASKS, last, marker]).await;
    wait_until_reading(&engine, &db).await;
    // Both sources call watch() on the tasks table at start-up, outside install.sql's
    // advisory lock, and two such calls at once can deadlock; the engine then restarts the
    // one that lost. Only restarts from here on count below.
    let restarts_before = source_metric(&engine, RESTARTS, "pg-changes").await;

    // Twenty transactions of fifty rows; right after the 5th, 10th and 15th commit the source
    // is busy handing on rows and saving its cursor after each, and its connection is
    // terminated: wherever that lands (before or after a save), nothing may be lost or
    // handed on twice.
    const KILL_AFTER: [usize; 3] = [5, 10, 15];
    let application = db.pg_changes_application();
    let mut kills = 0;
    for transaction in 1..=20 {
        db.insert_tasks(50).await;
        if KILL_AFTER.contains(&transaction) {
            kills += db.kill(&application).await;
            let (status, body) = engine.get("/healthz").await;
            assert_eq!(status, 200, "the engine serves HTTP meanwhile: {body}");
        }
    }
    assert_eq!(kills, KILL_AFTER.len(), "each kill found one connection");

    wait_for_pg_changes(&engine, 1000).await;
    let frames = frames_until(&mut list, last).await;
    assert!(
        frames.iter().all(|tags| tags.iter().any(|t| t == TASKS)),
        "every frame of inserts lists the collection tag: {frames:?}"
    );

    // A marker row after all the others: once it has reached the browser, any repeat of an
    // earlier row (which sorts before it) would have been counted too.
    db.exec(&format!("INSERT INTO {s}.tasks (title) VALUES ('marker')"))
        .await;
    frames_until(&mut list, marker).await;
    assert_eq!(source_metric(&engine, CHANGES, "pg-changes").await, 1001);

    // Each kill was recovered from: the source reconnected by itself (it logs so), or the
    // engine restarted it.
    let reconnects = plugin_logs(
        &engine,
        "pg-changes",
        "lost the database connection; reconnecting",
    )
    .len() as u64;
    let restarts = source_metric(&engine, RESTARTS, "pg-changes").await - restarts_before;
    assert!(
        reconnects + restarts >= KILL_AFTER.len() as u64,
        "{} kills, but {reconnects} reconnects and {restarts} restarts",
        KILL_AFTER.len()
    );
    let (status, body) = engine.get("/readyz").await;
    assert_eq!(status, 200, "every source runs again: {body}");
}

#[tokio::test]
async fn an_engine_restart_loses_and_repeats_no_change() {
    let Some(db) = TestDb::connect("restart").await else {
        return;
    };
    let s = db.schema.clone();
    const TOTAL: u64 = 400;

    // Engine 1 is stopped while it is most likely still handing on the first half.
    let first = Engine::start(&db.engine_config());
    wait_until_reading(&first, &db).await;
    for _ in 0..4 {
        db.insert_tasks(50).await;
    }
    let deadline = Instant::now() + PATIENCE;
    while source_metric(&first, CHANGES, "pg-changes").await == 0 {
        assert!(Instant::now() < deadline, "no change reached engine 1");
        tokio::time::sleep(POLL).await;
    }
    let (status, logs) = terminate_with_logs(first);
    assert!(status.success(), "engine 1 exits cleanly: {status}");
    let stopped: Vec<Value> = logs
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .map(|record| record["fields"].clone())
        .filter(|f| f["message"] == "source stopped" && f["source"] == "pg-changes")
        .collect();
    let [stopped] = stopped.as_slice() else {
        panic!("expected one `source stopped` line of pg-changes: {stopped:?}");
    };
    let handed_on_first = stopped["changes"].as_u64().expect("`changes` is a count");
    assert!(
        (1..=TOTAL / 2).contains(&handed_on_first),
        "engine 1 handed on {handed_on_first} of the {} rows written before it stopped",
        TOTAL / 2
    );

    // The second half is written while no engine runs; engine 2 reads the same consumers.
    for _ in 0..4 {
        db.insert_tasks(50).await;
    }
    let second = Engine::start(&db.engine_config());
    wait_for_pg_changes(&second, TOTAL - handed_on_first).await;

    // It stays there: a marker row arrives, and with it exactly one more change.
    let marker = format!("App_Entity_Task_{}", TOTAL + 1);
    let mut client = Client::connect(&second, None).await;
    client.subscribe(&[&marker]).await;
    db.exec(&format!("INSERT INTO {s}.tasks (title) VALUES ('marker')"))
        .await;
    assert_eq!(client.next_outdated().await, [marker]);
    assert_eq!(
        source_metric(&second, CHANGES, "pg-changes").await,
        TOTAL + 1 - handed_on_first,
        "engine 1 handed on {handed_on_first}"
    );
}
