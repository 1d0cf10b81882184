//! The event-source face plugin authors implement, and its adapter to the ABI object.

use std::time::Duration;

use abi_stable::std_types::{RResult, RString};

use crate::abi::{ChangeAbi, EmitStatus, EmitterBox, Op, PluginError, SourceAbi};
use crate::data::Data;
use crate::error::Error;
use crate::guard::guarded;

/// Watches something outside the engine and hands its changes to the engine.
///
/// The engine runs each source on a thread of its own and calls [`Source::run`] there. A
/// cdylib has its own copy of tokio and cannot use the engine's runtime: a source that wants
/// async builds a runtime of its own on this thread.
///
/// `run` returns `Ok(())` once [`SourceContext`] says stop, and `Err` when the source
/// cannot go on; the engine then builds the source again from its settings and restarts it
/// with backoff. A panic counts as an error.
pub trait Source: Send + 'static {
    /// Runs until stopped or failed.
    fn run(&mut self, ctx: &SourceContext) -> Result<(), Error>;
}

/// One change, as a source reports it.
#[derive(Clone, Debug)]
pub struct Change {
    /// What happened.
    pub op: Op,
    /// The data the engine's generators turn into tags.
    pub data: Data,
    /// The user who made the change; their own connections are not told.
    pub author: Option<String>,
}

/// Returned by [`SourceContext::emit`] once the engine stops the source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stopped;

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the engine is stopping this source")
    }
}

impl std::error::Error for Stopped {}

/// The engine's side of a running source.
pub struct SourceContext {
    emitter: EmitterBox,
}

impl SourceContext {
    /// Wraps the engine's emitter. The engine builds these; tests may build one around their
    /// own [`crate::abi::EmitterAbi`] implementation.
    pub fn new(emitter: EmitterBox) -> SourceContext {
        SourceContext { emitter }
    }

    /// Hands `change` to the engine. Blocks while the engine is behind (nothing is
    /// dropped); returns [`Stopped`] once the engine stops the source, and the change was
    /// then not taken.
    pub fn emit(&self, change: Change) -> Result<(), Stopped> {
        let change = ChangeAbi {
            op: change.op,
            data: change.data,
            author: change.author.map(RString::from).into(),
        };
        match self.emitter.emit(change) {
            EmitStatus::Accepted => Ok(()),
            EmitStatus::Stopped => Err(Stopped),
        }
    }

    /// True once the engine has asked the source to stop.
    pub fn is_stopped(&self) -> bool {
        self.emitter.is_stopped()
    }

    /// Waits up to `timeout` for a stop request; true if one came. Use it instead of
    /// sleeping between polls, so that shutdown is not delayed.
    pub fn wait_stopped(&self, timeout: Duration) -> bool {
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self.emitter.wait_stopped(ms)
    }
}

/// Wraps a [`Source`] as the ABI object the engine runs.
pub(crate) struct SourceAdapter<S> {
    pub(crate) plugin: &'static str,
    pub(crate) inner: S,
}

impl<S: Source> SourceAbi for SourceAdapter<S> {
    fn run(&mut self, emitter: EmitterBox) -> RResult<(), PluginError> {
        let ctx = SourceContext::new(emitter);
        guarded(self.plugin, || self.inner.run(&ctx))
    }
}
