//! pg-changes: a tagcast event source that follows row changes of PostgreSQL tables without
//! losing or repeating any. A trigger writes each row change to an outbox table; the source
//! reads the outbox in order, hands each change to the engine as an entity change
//! (`{"class": ..., "id": ...}`, which the entity-tags generator turns into tags) and records
//! its position in the database. `sql/install.sql` installs the outbox; docs/sources.md says
//! what the feed guarantees and why.
//!
//! The reader itself lives in [`feed`], which user-tasks compiles in as well.

mod config;
pub mod feed;
mod source;

pub use config::{PgChangesConfig, TableConfig};
pub use source::{PgChangesSource, PLUGIN};

tagcast_plugin_api::export_plugin! {
    name: "pg-changes",
    source: PgChangesSource::new,
}
