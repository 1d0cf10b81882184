//! The tag-generator face plugin authors implement, and its adapter to the ABI object.

use std::mem;

use abi_stable::std_types::{RResult, RString, RVec};

use crate::abi::{GeneratorAbi, Options, PluginError};
use crate::data::{Data, Value};
use crate::error::Error;
use crate::guard::guarded;

/// Turns change data into content tags. Called from many threads at once.
///
/// A panic in either method is caught at the boundary and reported to the engine as an
/// error of this plugin; the engine logs it, counts it and goes on with the other generators.
pub trait Generator: Send + Sync + 'static {
    /// Whether this generator makes tags for `data`. The chain only calls
    /// [`Generator::generate`] when this returns true.
    fn supports(&self, data: Value<'_>) -> bool;

    /// Appends the tags of `data` to `tags`. Duplicates are allowed; the chain removes them.
    fn generate(&self, data: Value<'_>, options: Options, tags: &mut Tags) -> Result<(), Error>;
}

/// The tags a generator produces, in order.
#[derive(Debug, Default)]
pub struct Tags(RVec<RString>);

impl Tags {
    /// An empty list.
    pub fn new() -> Tags {
        Tags::default()
    }

    /// Appends a tag.
    pub fn push(&mut self, tag: impl Into<String>) {
        self.0.push(RString::from(tag.into()));
    }

    /// The number of tags.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The tags as string slices.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(RString::as_str)
    }

    /// The tags as owned strings.
    pub fn into_vec(self) -> Vec<String> {
        self.0.into_iter().map(String::from).collect()
    }
}

/// Wraps a [`Generator`] as the ABI object the engine calls.
pub(crate) struct GeneratorAdapter<G> {
    pub(crate) plugin: &'static str,
    pub(crate) inner: G,
}

impl<G: Generator> GeneratorAbi for GeneratorAdapter<G> {
    fn supports(&self, data: &Data) -> RResult<bool, PluginError> {
        guarded(self.plugin, || Ok(self.inner.supports(data.root())))
    }

    fn generate(
        &self,
        data: &Data,
        options: Options,
        tags: &mut RVec<RString>,
    ) -> RResult<(), PluginError> {
        guarded(self.plugin, || {
            // Moving the buffer in and out is two pointer swaps; it lets the author's code
            // push into the host's vector directly.
            let mut out = Tags(mem::take(tags));
            let result = self.inner.generate(data.root(), options, &mut out);
            *tags = out.0;
            result
        })
    }
}
