//! The outbox reader both PostgreSQL sources run: it reads the rows the capture trigger
//! writes, has a [`Mapper`] turn each into changes, hands those to the engine and records the
//! position reached in the cursor table, so that nothing is lost and nothing repeated.
//!
//! user-tasks compiles this folder into its own library (see its Cargo.toml); keep it free of
//! anything outside it but its dependencies.
//!
//! The rule it follows (argued in docs/sources.md): rows are handed on in `(xid, id)` order,
//! and a row only once its transaction is older than every transaction still running (its
//! `xid` is below the reading snapshot's `xmin`). Every row that could still sort before it
//! has then committed and is visible, or never will be, so the position, once past a row,
//! never has to come back. The position is saved after every change handed on; on a lost
//! connection the reader reconnects and writes the position it holds in memory before reading
//! on, so a save lost with the connection repeats nothing.

mod db;
mod error;
pub mod position;
pub mod sql;

use std::time::{Duration, Instant};

use tagcast_plugin_api::tracing::{error, info, trace, warn};
use tagcast_plugin_api::{Change, Error, Op, SourceContext};
use tokio::runtime::Runtime;

use self::db::{Connection, Wake};
pub use self::error::FeedError;
use self::position::Position;

/// The first wait before reconnecting; it doubles up to [`RECONNECT_MAX`].
const RECONNECT_MIN: Duration = Duration::from_millis(50);
/// The longest wait between two connection attempts.
const RECONNECT_MAX: Duration = Duration::from_secs(10);
/// The first wait before reading again while rows are held back by a running transaction;
/// it doubles up to the poll interval. Most such transactions end within milliseconds.
const HELD_MIN: Duration = Duration::from_millis(5);
/// How long rows may be held back by an older running transaction before a warning says so.
const HELD_WARN: Duration = Duration::from_secs(30);
/// How often old outbox rows are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// What a reader needs to know, built by a source from its own settings.
pub struct FeedSettings {
    /// The plugin's name, for logs.
    pub plugin: &'static str,
    /// The connection string as configured: part of the key of the remembered position.
    pub url: String,
    /// The parsed connection settings.
    pub pg: tokio_postgres::Config,
    /// `host:port/database`, for messages (the URL may hold a password).
    pub target: String,
    /// The schema of the outbox.
    pub schema: String,
    /// The name of this consumer's cursor.
    pub consumer: String,
    /// The watched tables this source maps, as configured; [`Mapper::map`] gets an index in
    /// this list. Rows of other tables are passed over.
    pub tables: Vec<String>,
    /// How long to wait for a wake-up before reading anyway.
    pub poll_interval: Duration,
    /// How many rows one read asks for.
    pub batch_size: u32,
    /// Outbox rows older than this are deleted; `None` keeps them.
    pub retention: Option<Duration>,
    /// What to install at start-up; `None` when the schema is installed by hand.
    pub install: Option<Install>,
}

/// What a source installs at start-up, after pg-changes' install.sql.
pub struct Install {
    /// Further SQL scripts, rendered (see [`sql::render`]).
    pub scripts: Vec<String>,
    /// The tables to attach the capture trigger to.
    pub watches: Vec<Watch>,
}

/// One call of the schema's `watch()` function.
pub struct Watch {
    /// The table, as SQL resolves it.
    pub table: String,
    /// The key columns, in order.
    pub key_columns: Vec<String>,
    /// Further columns to capture.
    pub columns: Vec<String>,
    /// The column that names the author of an insert or update.
    pub author_column: Option<String>,
    /// The session setting that names the author otherwise.
    pub author_setting: String,
}

/// One outbox row, as a [`Mapper`] sees it.
#[derive(Clone, Debug)]
pub struct OutboxRow {
    /// The writing transaction.
    pub xid: u64,
    /// The row's id.
    pub id: i64,
    /// The watched table, as `schema.name`.
    pub table: String,
    /// The kind of row change.
    pub op: Op,
    /// The key column values, in key column order.
    pub key: Vec<serde_json::Value>,
    /// Who made the change, when known.
    pub author: Option<String>,
    /// The captured columns of the row (of the old row, for a delete).
    pub data: serde_json::Map<String, serde_json::Value>,
    /// For an update, the captured columns before it; empty otherwise.
    pub old: serde_json::Map<String, serde_json::Value>,
}

/// Turns an outbox row into the changes a source emits: none, one or several.
pub trait Mapper: Send + 'static {
    /// The changes for `row` of table number `table` (an index in [`FeedSettings::tables`]).
    /// Must give the same changes for the same row every time: a row whose changes were
    /// partly handed on is mapped again and resumes at the first change not handed on.
    fn map(&self, table: usize, row: &OutboxRow) -> Vec<Change>;
}

impl FeedSettings {
    /// Checks and builds the settings every PostgreSQL source shares. Errors name the
    /// offending setting.
    pub fn new(
        plugin: &'static str,
        url: &str,
        schema: &str,
        consumer: &str,
        poll_interval_ms: u64,
        batch_size: u32,
        retention_seconds: u64,
    ) -> Result<FeedSettings, Error> {
        let mut pg: tokio_postgres::Config = url.parse().map_err(|err| {
            Error::config(
                Some("url"),
                format!(
                    "not a PostgreSQL connection string ({}); \
                     write it as postgres://user@host:5432/database",
                    error::chain(&err)
                ),
            )
        })?;
        if !sql::is_plain_name(schema) {
            return Err(Error::config(
                Some("schema"),
                format!(
                    "`{schema}` is not a plain lowercase name ([a-z_][a-z0-9_]*, up to 48 bytes)"
                ),
            ));
        }
        if consumer.is_empty() {
            return Err(Error::config(Some("consumer"), "name the consumer"));
        }
        if poll_interval_ms == 0 {
            return Err(Error::config(
                Some("poll_interval_ms"),
                "must be at least 1 (1000 is a good value: wake-ups come by notification)",
            ));
        }
        if !(1..=100_000).contains(&batch_size) {
            return Err(Error::config(
                Some("batch_size"),
                "must be between 1 and 100000",
            ));
        }
        if pg.get_application_name().is_none() {
            pg.application_name(format!("tagcast {plugin} {consumer}"));
        }
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(Duration::from_secs(10));
        }
        Ok(FeedSettings {
            plugin,
            url: url.to_owned(),
            target: describe(&pg),
            pg,
            schema: schema.to_owned(),
            consumer: consumer.to_owned(),
            tables: Vec::new(),
            poll_interval: Duration::from_millis(poll_interval_ms),
            batch_size,
            retention: (retention_seconds > 0).then(|| Duration::from_secs(retention_seconds)),
            install: None,
        })
    }
}

/// Checks a custom setting name (`tagcast.author`): Postgres wants a prefix before a dot.
pub fn check_author_setting(name: &str) -> Result<(), Error> {
    let valid = name.contains('.')
        && !name.starts_with('.')
        && !name.ends_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    if valid {
        Ok(())
    } else {
        Err(Error::config(
            Some("author_setting"),
            format!(
                "`{name}` is not a custom setting name; \
                 write it as prefix.name, such as tagcast.author"
            ),
        ))
    }
}

/// The outbox reader: settings, mapper and what it keeps across reconnects.
pub struct Feed<M> {
    settings: FeedSettings,
    mapper: M,
    /// The key of this consumer in the process-wide memory of positions.
    key: String,
    /// Whether `settings.install` ran on this object already: once is enough.
    installed: bool,
}

/// What the last read found.
enum Progress {
    /// The engine stopped the source during an emit.
    Stopped,
    /// More rows are waiting: read again at once.
    More,
    /// Rows are waiting for an older transaction to end.
    HeldBack,
    /// Everything visible was handed on.
    Drained,
}

impl<M: Mapper> Feed<M> {
    /// A reader; nothing connects before [`Feed::run`].
    pub fn new(settings: FeedSettings, mapper: M) -> Feed<M> {
        let key = position::key(&settings.url, &settings.schema, &settings.consumer);
        Feed {
            settings,
            mapper,
            key,
            installed: false,
        }
    }

    /// Runs until the engine stops the source (`Ok`) or something other than a lost
    /// connection fails (`Err`). A lost connection is retried here, with backoff, so that
    /// the position held in memory survives it.
    pub fn run(&mut self, ctx: &SourceContext) -> Result<(), FeedError> {
        // The engine gives the source a thread of its own; the runtime lives on it and only
        // runs while the reader waits for the database.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(FeedError::Runtime)?;
        let mut delay = RECONNECT_MIN;
        loop {
            if ctx.is_stopped() {
                return Ok(());
            }
            match self.session(&rt, ctx, &mut delay) {
                Ok(()) => return Ok(()),
                Err(err) if err.is_connection_loss() => {
                    warn!(
                        plugin = self.settings.plugin,
                        consumer = %self.settings.consumer,
                        database = %self.settings.target,
                        error = %err,
                        retry_in_ms = delay.as_millis() as u64,
                        "lost the database connection; reconnecting"
                    );
                    if ctx.wait_stopped(delay) {
                        return Ok(());
                    }
                    delay = (delay * 2).min(RECONNECT_MAX);
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// One connection's life: set up, then read, hand on and wait until the engine stops
    /// the source (`Ok`) or something fails. `delay` is the reconnect backoff, reset once a
    /// read succeeds.
    fn session(
        &mut self,
        rt: &Runtime,
        ctx: &SourceContext,
        delay: &mut Duration,
    ) -> Result<(), FeedError> {
        let install = if self.installed {
            None
        } else {
            self.settings.install.as_ref()
        };
        let conn = Connection::open(rt, &self.settings, install)?;
        self.installed = true;
        let s = &self.settings;
        let tables = conn.resolve_tables(rt, &s.tables)?;

        // One reader per consumer: a second engine configured with the same consumer waits
        // here as a standby instead of racing the first over the cursor.
        let lock = format!("tagcast consumer {}.{}", s.schema, s.consumer);
        let mut told = false;
        while !conn.try_lock(rt, &lock)? {
            if !told {
                info!(
                    consumer = %s.consumer,
                    "another session reads this consumer; waiting for it to end"
                );
                told = true;
            }
            match conn.wait(rt, ctx, s.poll_interval) {
                Wake::Stopped => return Ok(()),
                Wake::Closed => return Err(FeedError::Closed),
                Wake::Notified | Wake::TimedOut => {}
            }
        }

        // The stored cursor lags the memory when the last save was lost with a connection.
        let stored = conn.load(rt, &s.schema, &s.consumer)?;
        let mut position = stored;
        if let Some(remembered) = position::remembered(&self.key) {
            if remembered > stored {
                conn.save(rt, &s.consumer, remembered)?;
                position = remembered;
            }
        }
        info!(
            consumer = %s.consumer,
            database = %s.target,
            outbox = %format!("{}.outbox", s.schema),
            xid = position.xid,
            id = position.id,
            "reading the outbox"
        );

        let mut next_prune = Instant::now();
        let mut held_wait = HELD_MIN;
        // When the current hold-back began, and whether it was warned about.
        let mut held_since: Option<(Instant, bool)> = None;
        loop {
            if ctx.is_stopped() {
                return Ok(());
            }
            if let Some(retention) = s.retention {
                if Instant::now() >= next_prune {
                    self.prune(rt, &conn, retention, position)?;
                    next_prune = Instant::now() + PRUNE_EVERY;
                }
            }

            let batch = conn.read(rt, position.read_from(), s.batch_size)?;
            *delay = RECONNECT_MIN;
            let wait = match self.hand_on(rt, ctx, &conn, &tables, batch, &mut position)? {
                Progress::Stopped => return Ok(()),
                Progress::More => continue,
                Progress::HeldBack => {
                    let (since, warned) = held_since.get_or_insert((Instant::now(), false));
                    if !*warned && since.elapsed() >= HELD_WARN {
                        warn!(
                            consumer = %s.consumer,
                            held_s = since.elapsed().as_secs(),
                            "outbox rows are held back by an older transaction still running; \
                             look for an old backend_xid in pg_stat_activity or pg_prepared_xacts"
                        );
                        *warned = true;
                    }
                    let wait = held_wait;
                    held_wait = (held_wait * 2).min(s.poll_interval);
                    wait
                }
                Progress::Drained => {
                    held_wait = HELD_MIN;
                    held_since = None;
                    s.poll_interval
                }
            };
            match conn.wait(rt, ctx, wait) {
                Wake::Stopped => return Ok(()),
                Wake::Closed => return Err(FeedError::Closed),
                Wake::Notified | Wake::TimedOut => {}
            }
        }
    }

    /// Maps and emits the rows of one read, saving the position after every change.
    fn hand_on(
        &self,
        rt: &Runtime,
        ctx: &SourceContext,
        conn: &Connection,
        tables: &[String],
        batch: db::Batch,
        position: &mut Position,
    ) -> Result<Progress, FeedError> {
        let consumer = &self.settings.consumer;
        let mut unsaved = false;
        for row in &batch.rows {
            let done = position.handed_on(row.xid, row.id);
            let changes = match tables.iter().position(|t| *t == row.table) {
                Some(table) => self.mapper.map(table, row),
                None => Vec::new(),
            };
            let total = changes.len();
            for (i, change) in changes.into_iter().enumerate().skip(done as usize) {
                trace!(consumer = %consumer, id = row.id, table = %row.table, "change");
                if ctx.emit(change).is_err() {
                    return Ok(Progress::Stopped);
                }
                *position = Position {
                    xid: row.xid,
                    id: row.id,
                    part: if i + 1 == total {
                        Position::WHOLE
                    } else {
                        u32::try_from(i + 1).unwrap_or(Position::WHOLE)
                    },
                };
                // Memory first: if the save below is lost with the connection, the next
                // session writes this position before reading on.
                position::remember(&self.key, *position);
                conn.save(rt, consumer, *position)?;
                unsaved = false;
            }
            let whole = Position {
                xid: row.xid,
                id: row.id,
                part: Position::WHOLE,
            };
            if *position < whole {
                // A row with no (more) changes, such as one of a table this source does not
                // map: pass over it, and save with the next change or at the end of the read.
                *position = whole;
                position::remember(&self.key, whole);
                unsaved = true;
            }
        }
        if unsaved {
            conn.save(rt, consumer, *position)?;
        }
        Ok(if batch.held_back {
            Progress::HeldBack
        } else if batch.full {
            Progress::More
        } else {
            Progress::Drained
        })
    }

    fn prune(
        &self,
        rt: &Runtime,
        conn: &Connection,
        retention: Duration,
        position: Position,
    ) -> Result<(), FeedError> {
        let (pruned, unread) = conn.prune(rt, retention, position)?;
        if unread > 0 {
            error!(
                consumer = %self.settings.consumer,
                pruned = unread,
                retention_s = retention.as_secs(),
                "outbox rows were pruned before this consumer handed them on; \
                 raise `retention_seconds` above the longest outage"
            );
        }
        if pruned > 0 {
            info!(consumer = %self.settings.consumer, pruned, "pruned old outbox rows");
        }
        Ok(())
    }
}

/// `host:port/database` of a connection config, without credentials.
fn describe(pg: &tokio_postgres::Config) -> String {
    let host = match pg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = pg.get_ports().first().copied().unwrap_or(5432);
    let db = pg.get_dbname().or(pg.get_user()).unwrap_or("postgres");
    format!("{host}:{port}/{db}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str, schema: &str) -> Result<FeedSettings, Error> {
        FeedSettings::new("test", url, schema, "tagcast", 1000, 500, 0)
    }

    #[test]
    fn settings_name_the_bad_key() {
        let err = settings("not a url ::", "tagcast")
            .err()
            .map(|e| e.key().map(str::to_owned));
        assert_eq!(err, Some(Some("url".to_owned())));
        let err = settings("postgres://u@h/db", "Bad-Name")
            .err()
            .map(|e| e.key().map(str::to_owned));
        assert_eq!(err, Some(Some("schema".to_owned())));
        assert!(check_author_setting("tagcast.author").is_ok());
        assert!(check_author_setting("author").is_err());
    }

    #[test]
    fn the_target_leaves_out_the_password() {
        let s = settings("postgres://alice:secret@db.example:6543/shop", "tagcast").unwrap();
        assert_eq!(s.target, "db.example:6543/shop");
        assert!(s.retention.is_none(), "retention 0 keeps the rows");
        assert_eq!(s.pg.get_application_name(), Some("tagcast test tagcast"));
    }
}

/// Setting defaults shared by every plugin that reads the outbox (pg-changes and
/// user-tasks compile this module), so that both agree on them.
pub mod defaults {
    /// The schema holding the outbox.
    pub fn schema() -> String {
        "tagcast".to_owned()
    }

    /// The session setting that names a change's author.
    pub fn author_setting() -> String {
        "tagcast.author".to_owned()
    }

    /// How long to wait for a wake-up before reading the outbox anyway.
    pub fn poll_interval_ms() -> u64 {
        1000
    }

    /// How many outbox rows one read asks for.
    pub fn batch_size() -> u32 {
        500
    }

    /// How long outbox rows are kept, in seconds.
    pub fn retention_seconds() -> u64 {
        86_400
    }
}
