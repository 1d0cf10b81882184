//! The types that cross the library boundary. Only abi_stable types appear here: no std
//! collections, serde, tokio or tracing types. Plugin authors never touch this module; the
//! engine uses it to load and call plugins.
//!
//! Evolving it: the root module and every trait object are prefix types. A later minor
//! version of plugin-api may append fields and methods *after* the one marked
//! `last_prefix_field` (that mark never moves: moving it is a breaking change); the engine
//! reads appended fields as optional, so plugins built against an earlier minor version still
//! load. Anything else (a changed signature, a reordered field, a new enum variant) is a new
//! major version.

// abi_stable's derives and `sabi_trait` expand to unsafe impls and calls, and to impls the
// newer `non_local_definitions` lint flags; both are how the crate is meant to be used.
#![allow(unsafe_code, non_local_definitions)]

use abi_stable::library::RootModule;
use abi_stable::sabi_types::VersionStrings;
use abi_stable::std_types::{ROption, RResult, RStr, RString, RVec};
use abi_stable::{declare_root_module_statics, package_version_strings, sabi_trait, StableAbi};

use crate::data::Data;

/// What went wrong, as the engine sees it.
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The plugin rejected its configuration.
    Config,
    /// An operation failed and returned an error.
    Failed,
    /// The plugin panicked; plugin-api caught the panic at the boundary.
    Panic,
}

/// An error as it crosses the boundary: always names the plugin it came from.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct PluginError {
    /// The plugin's name, from its manifest.
    pub plugin: RString,
    /// The kind of failure.
    pub kind: ErrorKind,
    /// A readable message, without the plugin's name.
    pub message: RString,
    /// For configuration errors: the settings key at fault, when known.
    pub key: ROption<RString>,
}

/// Options of one generation, as Oro's tag generators take them.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Also produce the collection tag (`<class>_type_collection`), as for inserts and
    /// deletes, which change every list of that kind.
    pub collection: bool,
    /// Also produce the tags of the entities nested one level deep in the data.
    pub nested: bool,
}

/// What a plugin library says about itself. Everything is `'static`: it lives in the library,
/// which is never unloaded.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub struct Manifest {
    /// The name plugins are registered and configured by, such as `entity-tags`.
    pub name: RStr<'static>,
    /// The plugin's own version (its crate version).
    pub version: RStr<'static>,
    /// The plugin-api version the plugin was built with.
    pub api_version: RStr<'static>,
    /// True if the plugin provides a tag generator.
    pub generator: bool,
    /// True if the plugin provides an event source.
    pub source: bool,
}

/// Severity of a forwarded log event; ordered from least to most verbose.
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Nothing is forwarded.
    Off,
    /// tracing's ERROR.
    Error,
    /// tracing's WARN.
    Warn,
    /// tracing's INFO.
    Info,
    /// tracing's DEBUG.
    Debug,
    /// tracing's TRACE.
    Trace,
}

/// One log event from a plugin, forwarded to the host's subscriber.
#[repr(C)]
#[derive(StableAbi)]
pub struct LogRecord<'a> {
    /// The plugin's name.
    pub plugin: RStr<'a>,
    /// Severity.
    pub level: LogLevel,
    /// The event's target (usually the plugin's module path).
    pub target: RStr<'a>,
    /// The event's message.
    pub message: RStr<'a>,
    /// The other fields, as `key=value` pairs separated by spaces.
    pub fields: RStr<'a>,
}

/// The host's logging entry point, handed to a plugin once at load.
#[repr(C)]
#[derive(StableAbi, Clone, Copy)]
pub struct HostLogger {
    /// The most verbose level the host records; the plugin drops anything above it before
    /// formatting.
    pub max_level: LogLevel,
    /// Records one event. Called from any thread of the plugin.
    pub log: extern "C" fn(&LogRecord<'_>),
}

/// A tag generator object, as the engine holds it.
#[sabi_trait]
pub trait GeneratorAbi: Send + Sync {
    /// Whether this generator makes tags for `data`.
    fn supports(&self, data: &Data) -> RResult<bool, PluginError>;

    /// Appends the tags of `data` to `tags`.
    #[sabi(last_prefix_field)]
    fn generate(
        &self,
        data: &Data,
        options: Options,
        tags: &mut RVec<RString>,
    ) -> RResult<(), PluginError>;
}

/// An owned generator object.
pub type GeneratorBox = GeneratorAbi_TO<'static, abi_stable::std_types::RBox<()>>;

/// The kind of a row change.
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// A record was created.
    Insert,
    /// A record was changed.
    Update,
    /// A record was removed.
    Delete,
}

/// A change as a source hands it to the engine.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct ChangeAbi {
    /// What happened.
    pub op: Op,
    /// The data the generators turn into tags.
    pub data: Data,
    /// The user who made the change; their connections are not told.
    pub author: ROption<RString>,
}

/// The answer to an emit.
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmitStatus {
    /// The engine took the change.
    Accepted,
    /// The engine is stopping the source; the change was not taken. Return from `run`.
    Stopped,
}

/// The engine's side of a running source: implemented by the host, called by the plugin.
#[sabi_trait]
pub trait EmitterAbi: Send + Sync {
    /// Hands a change to the engine; blocks while the engine is behind.
    fn emit(&self, change: ChangeAbi) -> EmitStatus;

    /// True once the engine has asked the source to stop.
    fn is_stopped(&self) -> bool;

    /// Waits up to `timeout_ms` for a stop request; true if one came.
    #[sabi(last_prefix_field)]
    fn wait_stopped(&self, timeout_ms: u64) -> bool;
}

/// An owned emitter object.
pub type EmitterBox = EmitterAbi_TO<'static, abi_stable::std_types::RBox<()>>;

/// An event source object, as the engine holds it.
#[sabi_trait]
pub trait SourceAbi: Send {
    /// Runs the source on the calling thread until the emitter says stop (return `ROk`) or
    /// the source fails (return `RErr`; the engine restarts it).
    #[sabi(last_prefix_field)]
    fn run(&mut self, emitter: EmitterBox) -> RResult<(), PluginError>;
}

/// An owned source object.
pub type SourceBox = SourceAbi_TO<'static, abi_stable::std_types::RBox<()>>;

/// The root module every plugin library exports.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModRef)))]
#[sabi(missing_field(option))]
pub struct PluginMod {
    /// Describes the plugin.
    pub manifest: extern "C" fn() -> Manifest,

    /// Installs the forwarding log subscriber; called once, right after load.
    pub set_logger: extern "C" fn(HostLogger),

    /// Builds the plugin's generator from its settings, given as TOML text.
    pub new_generator: extern "C" fn(settings: RStr<'_>) -> RResult<GeneratorBox, PluginError>,

    /// Builds the plugin's source from its settings, given as TOML text.
    #[sabi(last_prefix_field)]
    pub new_source: extern "C" fn(settings: RStr<'_>) -> RResult<SourceBox, PluginError>,
}

impl RootModule for PluginModRef {
    declare_root_module_statics! {PluginModRef}

    const BASE_NAME: &'static str = "tagcast_plugin";
    const NAME: &'static str = "tagcast plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}
