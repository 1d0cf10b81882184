//! The contract between the tagcast engine and its plugins: tag generators and event
//! sources shipped as shared libraries (`cdylib`) and loaded by the engine at start-up.
//!
//! A plugin crate depends on this crate alone, implements [`Generator`] and/or [`Source`],
//! and exports itself with [`export_plugin!`]. Everything that crosses the library boundary
//! is an abi_stable type (module [`abi`]); the layout is checked when the engine loads the
//! library, and no panic crosses it: plugin code runs under `catch_unwind` and a panic comes
//! back to the engine as an error naming the plugin. Build plugins with `panic = "unwind"`
//! (Cargo's default).
//!
//! Compatibility: a plugin loads into an engine whose plugin-api has the same major version;
//! within a major version, newer minor versions only append to the prefix types, so a plugin
//! built against 1.x loads into any engine built against 1.y. See `docs/plugins.md`.

pub mod abi;
mod data;
mod error;
#[doc(hidden)]
pub mod export;
mod generator;
mod guard;
mod logging;
mod source;
pub mod testing;

pub use abi::{ErrorKind, Op, Options};
pub use data::{Data, Kind, Value};
pub use error::Error;
pub use generator::{Generator, Tags};
pub use source::{Change, Source, SourceContext, Stopped};
pub use tracing;

#[doc(hidden)]
pub use export as __private;

/// The version of plugin-api a plugin or engine was built with.
pub const API_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Deserializes a plugin's `settings` table from the TOML text the engine passes. A failure
/// is a configuration error naming the offending key when toml reports one.
pub fn parse_settings<C: serde::de::DeserializeOwned>(settings: &str) -> Result<C, Error> {
    toml::from_str(settings).map_err(|err| {
        // toml points at the key for an unknown key and at the value for a bad value: either
        // way the key is what stands before `=` on that line.
        let key = err.span().and_then(|span| {
            let start = settings[..span.start.min(settings.len())]
                .rfind('\n')
                .map_or(0, |i| i + 1);
            let line = settings[start..].lines().next()?;
            let (key, _) = line.split_once('=')?;
            let key = key.trim().trim_matches('"');
            (!key.is_empty() && !key.contains('[')).then(|| key.to_owned())
        });
        Error::config(key.as_deref(), err.message().trim_end())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Settings {
        field: String,
        #[serde(default)]
        count: u32,
    }

    #[test]
    fn unknown_setting_names_its_key() {
        let err = parse_settings::<Settings>("field = \"x\"\nfeild = 1\n").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert_eq!(err.key(), Some("feild"));
    }

    #[test]
    fn mistyped_setting_names_its_key_not_its_value() {
        let err = parse_settings::<Settings>("field = \"x\"\ncount = \"many\"\n").unwrap_err();
        assert_eq!(err.key(), Some("count"));
    }
}
