//! simple-tags: the tag generator for named things that are not entities (a configuration
//! section, a menu, a dashboard), built as a plugin library the engine loads. It makes the
//! same tags as Oro Platform's `SimpleTagGenerator`, so that an Oro-style backend and tagcast
//! agree on every tag: `system_configuration_platform_general_setup` for
//! `{"name": "system_configuration", "params": ["platform", "general_setup"]}`.
//!
//! The crate is also an rlib, so that the chain benchmark can call [`SimpleGenerator`]
//! in-process as the baseline for the cost of the ABI call. Settings: [`SimpleConfig`] and
//! this folder's README.

mod config;
mod generator;

pub use config::SimpleConfig;
pub use generator::SimpleGenerator;

tagcast_plugin_api::export_plugin! {
    name: "simple-tags",
    generator: SimpleGenerator::new,
}
