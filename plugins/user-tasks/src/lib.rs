//! user-tasks: the user-task-assignment scenario. Its source follows a tasks table through
//! the pg-changes outbox and, when a task is created, deleted or reassigned, emits one change
//! per affected user, `{"user_tasks": <user id>}`; its generator turns that into the tag
//! `user_tasks_<user id>`. A page listing a user's tasks subscribes to that tag.
//!
//! `sql/schema.sql` creates the tasks table and watches it; the outbox is pg-changes'.

mod config;
mod generator;
mod source;

// The outbox reader, compiled from pg-changes' source (see Cargo.toml for why not as a
// dependency). Public only so that the parts this plugin does not call are not dead code
// here; it is pg-changes' API, not this crate's.
#[doc(hidden)]
#[path = "../../pg-changes/src/feed/mod.rs"]
pub mod feed;

pub use config::UserTasksConfig;
pub use generator::UserTasksGenerator;
pub use source::{UserTasksSource, PLUGIN, SCHEMA_SQL};

tagcast_plugin_api::export_plugin! {
    name: "user-tasks",
    generator: UserTasksGenerator::new,
    source: UserTasksSource::new,
}
