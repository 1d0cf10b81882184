//! Unit-testing a generator or source without the engine. A [`TestGenerator`] wraps the
//! generator in the same ABI object the engine calls, so panics and errors come back exactly
//! as the engine would see them.
//!
//! ```
//! use serde::Deserialize;
//! use tagcast_plugin_api::{testing, Error, Generator, Options, Tags, Value};
//!
//! #[derive(Deserialize)]
//! struct Settings {
//!     field: String,
//! }
//!
//! struct Field(String);
//!
//! impl Generator for Field {
//!     fn supports(&self, data: Value<'_>) -> bool {
//!         data.get(&self.0).is_some()
//!     }
//!
//!     fn generate(&self, data: Value<'_>, _: Options, tags: &mut Tags) -> Result<(), Error> {
//!         let mut tag = String::from("my_");
//!         data.get(&self.0).map(|v| v.write_scalar(&mut tag));
//!         tags.push(tag);
//!         Ok(())
//!     }
//! }
//!
//! let gen = testing::generator("my-tags", |s: Settings| Ok(Field(s.field)), r#"field = "id""#)
//!     .unwrap();
//! assert_eq!(gen.tags(r#"{"id": 1}"#, Options::default()).unwrap(), ["my_1"]);
//! assert!(gen.tags(r#"{"other": 1}"#, Options::default()).unwrap().is_empty());
//! ```

use abi_stable::std_types::{RResult, RVec};
use serde::de::DeserializeOwned;

use crate::abi::GeneratorBox;
use crate::data::Data;
use crate::error::Error;
use crate::export::build_generator;
use crate::generator::Generator;
use crate::Options;

/// Options without collection or nested tags.
pub const PLAIN: Options = Options {
    collection: false,
    nested: false,
};
/// Options with collection tags.
pub const COLLECTION: Options = Options {
    collection: true,
    nested: false,
};
/// Options with nested tags.
pub const NESTED: Options = Options {
    collection: false,
    nested: true,
};
/// Options with collection and nested tags.
pub const ALL: Options = Options {
    collection: true,
    nested: true,
};

/// One row of a table-driven test: what it shows, the data (JSON), the options, and the
/// tags expected.
pub type Case<'a> = (&'a str, &'a str, Options, &'a [&'a str]);

/// Runs every row through `generator` and asserts its tags, naming the row on failure.
pub fn check(generator: &TestGenerator, cases: &[Case<'_>]) {
    for (what, data, options, want) in cases {
        let got = generator
            .tags(data, *options)
            .unwrap_or_else(|err| panic!("{what}: {data} failed: {err}"));
        assert_eq!(got, *want, "{what}: {data} with {options:?}");
    }
}

/// A generator built from settings text, called through the ABI object.
pub struct TestGenerator {
    inner: GeneratorBox,
}

/// Builds a generator with `ctor` from `settings` (TOML text, the plugin's `settings` table)
/// as the engine would.
pub fn generator<C, G>(
    plugin: &'static str,
    ctor: impl FnOnce(C) -> Result<G, Error>,
    settings: &str,
) -> Result<TestGenerator, Error>
where
    C: DeserializeOwned,
    G: Generator,
{
    build_generator(plugin, settings, ctor).map(|inner| TestGenerator { inner })
}

impl TestGenerator {
    /// Whether the generator supports `json`. Panics on invalid JSON.
    pub fn supports(&self, json: &str) -> Result<bool, Error> {
        let data = parse(json);
        match self.inner.supports(&data) {
            RResult::ROk(yes) => Ok(yes),
            RResult::RErr(err) => Err(Error::from_abi(err)),
        }
    }

    /// The tags for `json` as the chain would get them from this generator alone: empty when
    /// it does not support the data. Panics on invalid JSON.
    pub fn tags(&self, json: &str, options: Options) -> Result<Vec<String>, Error> {
        let data = parse(json);
        match self.inner.supports(&data) {
            RResult::ROk(true) => {}
            RResult::ROk(false) => return Ok(Vec::new()),
            RResult::RErr(err) => return Err(Error::from_abi(err)),
        }
        let mut tags = RVec::new();
        match self.inner.generate(&data, options, &mut tags) {
            RResult::ROk(()) => Ok(tags.into_iter().map(String::from).collect()),
            RResult::RErr(err) => Err(Error::from_abi(err)),
        }
    }
}

fn parse(json: &str) -> Data {
    Data::from_json_str(json).unwrap_or_else(|err| panic!("test input is not JSON: {err}: {json}"))
}
