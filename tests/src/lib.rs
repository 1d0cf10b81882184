//! Test support for tagcast's end-to-end tests: the engine binary run as a process, and
//! clients that talk to it the way browsers and backends do.

pub mod engine;
pub mod plugin_fixtures;
