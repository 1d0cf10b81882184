//! What can go wrong while reading the outbox, and which of it a reconnect cures.

use std::error::Error as _;
use std::fmt::Write as _;
use std::time::Duration;

use tokio_postgres::error::SqlState;

/// How long one statement, or the whole connection set-up, may take before the connection is
/// given up as dead. Generous: the statements are small, a slower answer means trouble.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// An error of the outbox reader.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// The source's own runtime could not be built.
    #[error("could not start the source's tokio runtime: {0}")]
    Runtime(#[source] std::io::Error),

    /// Connecting failed.
    #[error("could not connect to {target}: {}", chain(.source))]
    Connect {
        /// host:port/database, without credentials.
        target: String,
        /// The driver's error.
        source: tokio_postgres::Error,
    },

    /// A statement failed.
    #[error("{what} failed: {}", chain(.source))]
    Statement {
        /// What the statement was for, such as "reading outbox tagcast.outbox".
        what: String,
        /// The driver's error.
        source: tokio_postgres::Error,
    },

    /// A statement or the connection set-up took longer than [`STATEMENT_TIMEOUT`].
    #[error("{what} took longer than {}s; giving up the connection", STATEMENT_TIMEOUT.as_secs())]
    Timeout {
        /// What was waited for.
        what: String,
    },

    /// The connection closed while the reader waited for a wake-up.
    #[error("the database connection closed")]
    Closed,

    /// A table named in the settings does not exist, or is named twice.
    #[error("setting `tables`, table `{table}`: {reason}")]
    Table {
        /// The name as configured.
        table: String,
        /// Why it cannot be used.
        reason: String,
    },

    /// The database returned something the outbox schema cannot hold.
    #[error("outbox row {id}: {reason}; is the outbox installed by this version's install.sql?")]
    BadRow {
        /// The row's id.
        id: i64,
        /// What was wrong.
        reason: String,
    },
}

impl FeedError {
    /// True when the connection is gone or unusable but a new one may work: the reader then
    /// reconnects by itself. Everything else (a missing table, a wrong password, SQL that
    /// fails) goes back to the engine as an error of `run`.
    pub fn is_connection_loss(&self) -> bool {
        match self {
            FeedError::Closed | FeedError::Timeout { .. } => true,
            // Without an answer from the server (refused, timed out, no route) connecting
            // again later may work; a refusal by the server is sorted like any server error.
            FeedError::Connect { source, .. } => {
                source.as_db_error().is_none() || is_connection_loss(source)
            }
            FeedError::Statement { source, .. } => is_connection_loss(source),
            FeedError::Runtime(_) | FeedError::Table { .. } | FeedError::BadRow { .. } => false,
        }
    }
}

/// Sorts a driver error into "the connection is lost" or not.
fn is_connection_loss(err: &tokio_postgres::Error) -> bool {
    if err.is_closed() {
        return true;
    }
    match err.as_db_error() {
        // The server ended the session: FATAL errors close the connection; class 08 is
        // "connection exception"; 57P01..57P03 are pg_terminate_backend, a shutdown and "not
        // yet accepting connections"; 53300 is too many connections.
        Some(db) => {
            let code = db.code();
            (matches!(db.severity(), "FATAL" | "PANIC") && !is_refusal(code))
                || code.code().starts_with("08")
                || [
                    SqlState::ADMIN_SHUTDOWN,
                    SqlState::CRASH_SHUTDOWN,
                    SqlState::CANNOT_CONNECT_NOW,
                    SqlState::TOO_MANY_CONNECTIONS,
                ]
                .contains(code)
        }
        // No answer from the server: the socket failed.
        None => err
            .source()
            .is_some_and(|source| source.downcast_ref::<std::io::Error>().is_some()),
    }
}

/// FATAL errors that a reconnect will not cure: bad credentials, no such database or role.
fn is_refusal(code: &SqlState) -> bool {
    code.code().starts_with("28")
        || [SqlState::INVALID_CATALOG_NAME, SqlState::UNDEFINED_OBJECT].contains(code)
}

/// The driver's error with its causes: its own Display says only "db error".
pub fn chain(err: &tokio_postgres::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(inner) = cause {
        // Writing to a String cannot fail.
        let _ = write!(text, ": {inner}");
        cause = inner.source();
    }
    text
}
