//! entity-tags: the tag generator for changed entities, built as a plugin library the engine
//! loads. It makes the same tags as Oro Platform's `DoctrineTagGenerator`, so that an
//! Oro-style backend and tagcast agree on every tag: `App_Entity_Task_42` for one entity and
//! `App_Entity_Task_type_collection` for every list of its class.
//!
//! The crate is also an rlib, so that the chain benchmark can call [`EntityGenerator`]
//! in-process as the baseline for the cost of the ABI call. Settings: [`EntityConfig`] and
//! this folder's README.

mod config;
mod generator;

pub use config::EntityConfig;
pub use generator::EntityGenerator;

tagcast_plugin_api::export_plugin! {
    name: "entity-tags",
    generator: EntityGenerator::new,
}
