//! One connection to the database: connecting, the task that drives the connection and turns
//! notifications into wake-ups, and the statements the reader runs. Every method blocks the
//! calling thread on the source's current-thread runtime; the driver task only runs inside
//! those calls, which is enough, since nothing needs the connection in between.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tagcast_plugin_api::tracing::debug;
use tagcast_plugin_api::{Op, SourceContext};
use tokio::runtime::Runtime;
use tokio::sync::Notify;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, Client, NoTls, Statement};

use super::error::{chain, FeedError, STATEMENT_TIMEOUT};
use super::position::Position;
use super::sql::{self, quote_ident, quote_literal};
use super::{FeedSettings, Install, OutboxRow};

/// How often a wait for a wake-up looks at the stop flag and the connection. The engine's
/// stop is a blocking wait of its own that cannot be raced against a notification, so the
/// reader waits in slices this long.
const STOP_CHECK: Duration = Duration::from_millis(50);

/// How many outbox rows one prune statement deletes: keeps each delete short.
const PRUNE_CHUNK: i64 = 10_000;

/// What ended a wait for a wake-up.
#[derive(Debug, PartialEq, Eq)]
pub enum Wake {
    /// A notification came (or the driver task signalled its end).
    Notified,
    /// The time was up.
    TimedOut,
    /// The engine stopped the source.
    Stopped,
    /// The connection is closed.
    Closed,
}

/// The rows of one read.
pub struct Batch {
    /// Rows that may be handed on, in `(xid, id)` order.
    pub rows: Vec<OutboxRow>,
    /// True when the read stopped at a row of a transaction newer than the oldest one still
    /// running: that row must wait, and more will follow soon.
    pub held_back: bool,
    /// True when the read returned as many rows as it asked for: read again at once.
    pub full: bool,
}

/// A live connection and its prepared statements.
pub struct Connection {
    client: Client,
    /// Signalled by the driver task on every notification and once when the connection
    /// ends. Dropped with the connection; the driver holds the other handle.
    wake: Arc<Notify>,
    read: Statement,
    save: Statement,
    prune: Statement,
    /// `schema.outbox`, for messages.
    outbox: String,
}

impl Connection {
    /// Connects, starts the driver task, listens for wake-ups, runs `install` if given and
    /// prepares the statements.
    pub fn open(
        rt: &Runtime,
        settings: &FeedSettings,
        install: Option<&Install>,
    ) -> Result<Connection, FeedError> {
        // Limitation: no TLS. A server that requires it refuses the connection; tunnel the
        // connection or keep the database on a trusted network until a TLS connector is added.
        let connect = settings.pg.connect(NoTls);
        let (client, connection) = match rt.block_on(within(STATEMENT_TIMEOUT, connect)) {
            Ok(Ok(pair)) => pair,
            Ok(Err(source)) => {
                return Err(FeedError::Connect {
                    target: settings.target.clone(),
                    source,
                })
            }
            Err(_) => {
                return Err(FeedError::Timeout {
                    what: format!("connecting to {}", settings.target),
                })
            }
        };

        let wake = Arc::new(Notify::new());
        rt.spawn(drive(connection, Arc::clone(&wake)));

        let schema = &settings.schema;
        let outbox = format!("{schema}.outbox");
        let conn = PartialConnection {
            rt,
            client: &client,
        };
        conn.batch(
            &format!("LISTEN {}", quote_ident(&format!("{schema}_outbox"))),
            "listening for outbox wake-ups",
        )?;
        if let Some(install) = install {
            conn.install(settings, install)?;
        }

        let q = quote_ident(schema);
        // `held`: the row's transaction is not older than every transaction still running,
        // one of which may yet commit rows that sort before it; it must wait. The snapshot
        // function returns the statement's own snapshot, so `held` and the rows agree.
        let read = conn.prepare(
            &format!(
                "SELECT o.xid::text, o.id, o.table_name, o.op, o.key::text, o.author, \
                        o.data::text, o.old::text, \
                        o.xid >= pg_snapshot_xmin(pg_current_snapshot()) AS held \
                 FROM {q}.outbox o \
                 WHERE (o.xid, o.id) >= ($1::text::xid8, $2) \
                 ORDER BY o.xid, o.id \
                 LIMIT $3"
            ),
            &outbox,
        )?;
        let save = conn.prepare(
            &format!(
                "INSERT INTO {q}.cursor (consumer, last_xid, last_id, last_part) \
                 VALUES ($1, $2::text::xid8, $3, $4) \
                 ON CONFLICT (consumer) DO UPDATE \
                 SET last_xid = EXCLUDED.last_xid, last_id = EXCLUDED.last_id, \
                     last_part = EXCLUDED.last_part, updated_at = now()"
            ),
            &outbox,
        )?;
        let prune = conn.prepare(
            &format!(
                "WITH gone AS ( \
                     DELETE FROM {q}.outbox WHERE id IN ( \
                         SELECT id FROM {q}.outbox \
                         WHERE at < now() - make_interval(secs => $1::float8) \
                         ORDER BY id LIMIT {PRUNE_CHUNK}) \
                     RETURNING xid, id) \
                 SELECT count(*), count(*) FILTER (WHERE (xid, id) >= ($2::text::xid8, $3)) \
                 FROM gone"
            ),
            &outbox,
        )?;

        Ok(Connection {
            client,
            wake,
            read,
            save,
            prune,
            outbox,
        })
    }

    /// The canonical `schema.name` of each configured table, in the same order. A name may
    /// be given as SQL would resolve it (`tasks`, `public.tasks`, `"Mixed"`).
    pub fn resolve_tables(
        &self,
        rt: &Runtime,
        tables: &[String],
    ) -> Result<Vec<String>, FeedError> {
        let mut resolved: Vec<String> = Vec::with_capacity(tables.len());
        for table in tables {
            let sql = "SELECT n.nspname || '.' || c.relname \
                       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                       WHERE c.oid = $1::text::regclass";
            let looked_up = block(rt, self.client.query_one(sql, &[table]), || {
                format!("looking up table {table}")
            });
            let name: String = match looked_up {
                Ok(row) => row.get(0),
                Err(FeedError::Statement { source, .. })
                    if source.code().is_some_and(|c| {
                        [
                            SqlState::UNDEFINED_TABLE,
                            SqlState::INVALID_SCHEMA_NAME,
                            SqlState::INVALID_NAME,
                        ]
                        .contains(c)
                    }) =>
                {
                    return Err(FeedError::Table {
                        table: table.clone(),
                        reason: format!(
                            "{}; create it first, or name it as SQL would (schema.table)",
                            chain(&source)
                        ),
                    })
                }
                Err(err) => return Err(err),
            };
            if resolved.contains(&name) {
                return Err(FeedError::Table {
                    table: table.clone(),
                    reason: format!("{name} is configured twice"),
                });
            }
            resolved.push(name);
        }
        Ok(resolved)
    }

    /// Takes the session lock of a consumer; false while another session holds it. The lock
    /// goes with the session, so a dead reader's lock is freed with its connection.
    pub fn try_lock(&self, rt: &Runtime, lock: &str) -> Result<bool, FeedError> {
        let sql = "SELECT pg_try_advisory_lock(hashtextextended($1, 0))";
        let row = block(rt, self.client.query_one(sql, &[&lock]), || {
            format!("locking {lock}")
        })?;
        Ok(row.get(0))
    }

    /// The consumer's stored position; [`Position::START`] for a new consumer.
    pub fn load(&self, rt: &Runtime, schema: &str, consumer: &str) -> Result<Position, FeedError> {
        let sql = format!(
            "SELECT last_xid::text, last_id, last_part FROM {}.cursor WHERE consumer = $1",
            quote_ident(schema)
        );
        let row = block(rt, self.client.query_opt(&sql, &[&consumer]), || {
            format!("reading the cursor of {consumer}")
        })?;
        let Some(row) = row else {
            return Ok(Position::START);
        };
        let xid: String = row.get(0);
        let id: i64 = row.get(1);
        Ok(Position::from_stored(parse_xid(&xid, id)?, id, row.get(2)))
    }

    /// Stores the consumer's position.
    pub fn save(&self, rt: &Runtime, consumer: &str, position: Position) -> Result<(), FeedError> {
        let xid = position.xid.to_string();
        let part = position.stored_part();
        let params: [&(dyn ToSql + Sync); 4] = [&consumer, &xid, &position.id, &part];
        block(rt, self.client.execute(&self.save, &params), || {
            format!("saving the cursor of {consumer}")
        })?;
        Ok(())
    }

    /// Reads up to `limit` rows from `from` on, stopping at the first held-back row.
    pub fn read(&self, rt: &Runtime, from: (u64, i64), limit: u32) -> Result<Batch, FeedError> {
        let xid = from.0.to_string();
        let limit_param = i64::from(limit);
        let params: [&(dyn ToSql + Sync); 3] = [&xid, &from.1, &limit_param];
        let rows = block(rt, self.client.query(&self.read, &params), || {
            format!("reading {}", self.outbox)
        })?;
        let full = rows.len() >= limit as usize;
        let mut batch = Batch {
            rows: Vec::with_capacity(rows.len()),
            held_back: false,
            full,
        };
        for row in rows {
            if row.get::<_, bool>(8) {
                batch.held_back = true;
                batch.full = false;
                break;
            }
            let id: i64 = row.get(1);
            let xid: String = row.get(0);
            let op: String = row.get(3);
            batch.rows.push(OutboxRow {
                xid: parse_xid(&xid, id)?,
                id,
                table: row.get(2),
                op: match op.as_str() {
                    "insert" => Op::Insert,
                    "update" => Op::Update,
                    "delete" => Op::Delete,
                    other => {
                        return Err(FeedError::BadRow {
                            id,
                            reason: format!("unknown op `{other}`"),
                        })
                    }
                },
                key: match parse_json(id, row.get(4))? {
                    serde_json::Value::Array(values) => values,
                    other => vec![other],
                },
                author: row.get(5),
                data: object(parse_json(id, row.get(6))?),
                old: object(parse_json(id, row.get(7))?),
            });
        }
        Ok(batch)
    }

    /// Deletes outbox rows older than `retention`; returns how many went, and how many of
    /// those this consumer (at `position`) had not handed on yet.
    pub fn prune(
        &self,
        rt: &Runtime,
        retention: Duration,
        position: Position,
    ) -> Result<(i64, i64), FeedError> {
        let (xid, id) = position.read_from();
        let xid = xid.to_string();
        let secs = retention.as_secs_f64();
        let (mut pruned, mut unread) = (0, 0);
        loop {
            let params: [&(dyn ToSql + Sync); 3] = [&secs, &xid, &id];
            let row = block(rt, self.client.query_one(&self.prune, &params), || {
                format!("pruning {}", self.outbox)
            })?;
            let (count, early): (i64, i64) = (row.get(0), row.get(1));
            pruned += count;
            unread += early;
            if count < PRUNE_CHUNK {
                return Ok((pruned, unread));
            }
        }
    }

    /// Waits up to `timeout` for a wake-up, a stop request or the end of the connection.
    pub fn wait(&self, rt: &Runtime, ctx: &SourceContext, timeout: Duration) -> Wake {
        let deadline = Instant::now() + timeout;
        loop {
            if ctx.is_stopped() {
                return Wake::Stopped;
            }
            if self.client.is_closed() {
                return Wake::Closed;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Wake::TimedOut;
            }
            // A notification that came while nobody waited left a permit: this returns at
            // once, so no wake-up between two waits is lost.
            let notified = within(left.min(STOP_CHECK), self.wake.notified());
            if rt.block_on(notified).is_ok() {
                return Wake::Notified;
            }
        }
    }
}

/// The connection before its statements are prepared.
struct PartialConnection<'a> {
    rt: &'a Runtime,
    client: &'a Client,
}

impl PartialConnection<'_> {
    fn batch(&self, sql: &str, what: &str) -> Result<(), FeedError> {
        block(self.rt, self.client.batch_execute(sql), || what.to_owned())
    }

    fn prepare(&self, sql: &str, outbox: &str) -> Result<Statement, FeedError> {
        block(self.rt, self.client.prepare(sql), || {
            format!("preparing the statements on {outbox}")
        })
    }

    /// Runs install.sql, the extra scripts, then watch() for each table: all idempotent, so
    /// a second engine or a restart runs them again harmlessly.
    fn install(&self, settings: &FeedSettings, install: &Install) -> Result<(), FeedError> {
        let schema = &settings.schema;
        // Attaching a trigger locks the table; behind a long transaction that lock would
        // queue every writer of the table behind it. Better to fail and retry later.
        self.batch("SET lock_timeout = '5s'", "limiting lock waits")?;
        let script = sql::render(sql::INSTALL_SQL, &[("schema", schema)]);
        self.batch(&script, &format!("installing the outbox schema {schema}"))?;
        for script in &install.scripts {
            self.batch(script, "running the plugin's schema script")?;
        }
        for watch in &install.watches {
            // Two sources watching one table at start-up would otherwise deadlock on its
            // trigger lock: each call takes install.sql's advisory lock first. Several
            // statements in one simple query run as one transaction, so the lock is held
            // until the call commits.
            let call = format!(
                "SELECT pg_advisory_xact_lock(hashtext('tagcast pg-changes install')); \
                 SELECT {}.watch({}, {}::text[], {}::text[], {}, {})",
                quote_ident(schema),
                quote_literal(&watch.table),
                quote_literal(&text_array(&watch.key_columns)),
                quote_literal(&text_array(&watch.columns)),
                watch
                    .author_column
                    .as_deref()
                    .map_or_else(|| "NULL".to_owned(), quote_literal),
                quote_literal(&watch.author_setting),
            );
            self.batch(&call, &format!("watching table {}", watch.table))?;
        }
        self.batch("RESET lock_timeout", "limiting lock waits")
    }
}

/// Drives the connection until it ends; each notification becomes a wake-up. Notices
/// (`CREATE ... IF NOT EXISTS` skipping) are only worth a debug line.
async fn drive(
    mut connection: tokio_postgres::Connection<
        tokio_postgres::Socket,
        tokio_postgres::tls::NoTlsStream,
    >,
    wake: Arc<Notify>,
) {
    loop {
        match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            Some(Ok(AsyncMessage::Notification(_))) => wake.notify_one(),
            Some(Ok(AsyncMessage::Notice(notice))) => {
                debug!(notice = %notice.message(), "database notice");
            }
            Some(Ok(_)) => {}
            Some(Err(err)) => {
                debug!(error = %chain(&err), "database connection ended");
                break;
            }
            None => break,
        }
    }
    // Wakes a reader waiting for a notification, so that it sees the end at once.
    wake.notify_one();
}

/// Runs one statement on the runtime, within [`STATEMENT_TIMEOUT`].
fn block<T>(
    rt: &Runtime,
    query: impl Future<Output = Result<T, tokio_postgres::Error>>,
    what: impl FnOnce() -> String,
) -> Result<T, FeedError> {
    match rt.block_on(within(STATEMENT_TIMEOUT, query)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(source)) => Err(FeedError::Statement {
            what: what(),
            source,
        }),
        Err(_) => Err(FeedError::Timeout { what: what() }),
    }
}

/// `tokio::time::timeout` as a future made inside the runtime: the timer must be created
/// where the runtime's time driver is current, which is only inside `block_on`.
async fn within<F: Future>(
    limit: Duration,
    future: F,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    tokio::time::timeout(limit, future).await
}

/// A Postgres array literal of names: `{"a","b"}`.
fn text_array(names: &[String]) -> String {
    let quoted: Vec<String> = names
        .iter()
        .map(|n| format!("\"{}\"", n.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("{{{}}}", quoted.join(","))
}

fn parse_xid(text: &str, id: i64) -> Result<u64, FeedError> {
    text.parse().map_err(|_| FeedError::BadRow {
        id,
        reason: format!("xid `{text}` is not a 64-bit transaction id"),
    })
}

fn parse_json(id: i64, text: Option<String>) -> Result<serde_json::Value, FeedError> {
    match text {
        None => Ok(serde_json::Value::Null),
        Some(text) => serde_json::from_str(&text).map_err(|err| FeedError::BadRow {
            id,
            reason: format!("invalid JSON from the database: {err}"),
        }),
    }
}

fn object(value: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    match value {
        serde_json::Value::Object(map) => map,
        _ => serde_json::Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_a_postgres_array_literal() {
        assert_eq!(
            text_array(&["id".into(), "we\"ird\\".into()]),
            r#"{"id","we\"ird\\"}"#
        );
        assert_eq!(text_array(&[]), "{}");
    }
}
