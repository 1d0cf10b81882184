//! Opens one plugin library and checks that it is a tagcast plugin built against a
//! compatible plugin-api.
//!
//! Each library is opened on its own through abi_stable's library header: the
//! `RootModule::load_from_file` convenience caches a single module per type (and keeps a
//! failed library cached), so it cannot hold several plugins. Libraries are never unloaded:
//! their code and `'static` strings stay valid for the life of the process.

use std::path::{Path, PathBuf};

use abi_stable::library::{lib_header_from_path, LibraryError};
use tagcast_plugin_api::abi::{Manifest, PluginModRef};
use tracing::debug;

/// Why a file could not be used as a plugin.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Not a loadable shared library, or not one that exports a tagcast plugin.
    #[error("{} is not a tagcast plugin: {cause}", path.display())]
    NotAPlugin {
        /// The file.
        path: PathBuf,
        /// Why.
        cause: String,
    },
    /// A tagcast plugin built against an incompatible plugin-api.
    #[error("{} is incompatible with this engine: {cause}", path.display())]
    Incompatible {
        /// The file.
        path: PathBuf,
        /// The key facts; the full report is logged at debug level.
        cause: String,
    },
}

/// A library that passed the checks.
#[derive(Clone, Copy)]
pub struct OpenedLibrary {
    /// The root module, valid forever.
    pub module: PluginModRef,
    /// What the library says about itself.
    pub manifest: Manifest,
}

/// Opens `path` and checks version and layout.
pub fn open(path: &Path) -> Result<OpenedLibrary, OpenError> {
    let not_a_plugin = |cause: String| OpenError::NotAPlugin {
        path: path.to_owned(),
        cause,
    };
    let incompatible = |cause: String| OpenError::Incompatible {
        path: path.to_owned(),
        cause,
    };

    let header = lib_header_from_path(path).map_err(|err| match err {
        LibraryError::OpenError { err, .. } => {
            not_a_plugin(format!("cannot open it as a shared library ({err})"))
        }
        LibraryError::GetSymbolError { .. } => not_a_plugin(
            "it exports no tagcast plugin root (is it built with \
             `tagcast_plugin_api::export_plugin!`?)"
                .to_owned(),
        ),
        LibraryError::InvalidAbiHeader(header) => incompatible(format!(
            "it was built with an incompatible abi_stable ({header:?})"
        )),
        other => not_a_plugin(other.to_string()),
    })?;

    let module = header
        .init_root_module::<PluginModRef>()
        .map_err(|err| match err {
            LibraryError::IncompatibleVersionNumber {
                expected_version,
                actual_version,
                ..
            } => incompatible(format!(
                "it was built against plugin-api {actual_version}, and this engine needs \
                 plugin-api {}.x (at least {expected_version}); rebuild the plugin against a \
                 compatible plugin-api",
                expected_version.major
            )),
            LibraryError::AbiInstability(report) => {
                let report = report.to_string();
                debug!(library = %path.display(), report = %report, "full layout report");
                incompatible(format!(
                    "its plugin-api types differ in layout from this engine's (built against \
                     an altered or different plugin-api); rebuild it against plugin-api {}: {}",
                    tagcast_plugin_api::API_VERSION,
                    layout_summary(&report)
                ))
            }
            other => not_a_plugin(format!("its root module failed to load: {other}")),
        })?;

    // A missing field can only come from a plugin built against an older minor version of
    // plugin-api; `manifest` is in every version.
    let manifest = module.manifest()();
    Ok(OpenedLibrary { module, manifest })
}

/// What differs, from abi_stable's layout report, which can run to thousands of lines: each
/// `Error:` entry at its end, with the type it concerns (the innermost type whose layouts
/// were compared) and the expected and found values.
fn layout_summary(report: &str) -> String {
    const KEPT: usize = 4;
    let lines: Vec<&str> = report.lines().collect();
    let mut compared: Option<&str> = None;
    let mut expect_type = false;
    let mut differences: Vec<String> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim();
        if trimmed == "Layout of expected type:" {
            expect_type = true;
        } else if expect_type && trimmed.starts_with("type:") {
            compared = Some(trimmed.trim_start_matches("type:"));
            expect_type = false;
        } else if let Some(what) = trimmed.strip_prefix("Error:") {
            let value_after = |label: &str| {
                lines[i + 1..]
                    .iter()
                    .skip_while(|l| l.trim() != label)
                    .nth(1)
                    .map(|l| l.trim())
                    .filter(|v| !v.is_empty() && !v.starts_with("Error:"))
            };
            let mut entry = match compared {
                Some(ty) => format!("type `{ty}`: {what}"),
                None => what.to_owned(),
            };
            if let (Some(e), Some(f)) = (value_after("Expected:"), value_after("Found:")) {
                entry.push_str(&format!(" (expected {e}, found {f})"));
            }
            if !differences.contains(&entry) {
                differences.push(entry);
            }
        }
    }
    let more = differences.len().saturating_sub(KEPT);
    differences.truncate(KEPT);
    let mut summary = differences.join("; ");
    if more > 0 {
        summary.push_str(&format!("; and {more} more"));
    }
    if summary.is_empty() {
        summary = "see the full report with RUST_LOG=debug".to_owned();
    } else {
        summary.push_str(" (full report with RUST_LOG=debug)");
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_file_named_so_is_not_a_plugin() {
        let dir = std::env::temp_dir().join(format!("tagcast-loader-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("libfake.so");
        std::fs::write(&path, "not a library\n").unwrap();
        let err = open(&path).err().expect("a text file must be refused");
        let text = err.to_string();
        assert!(matches!(err, OpenError::NotAPlugin { .. }), "{text}");
        assert!(
            text.contains("libfake.so") && text.contains("cannot open"),
            "{text}"
        );
    }

    #[test]
    fn layout_summary_names_the_type_and_the_difference() {
        let report = "Compared <this>:\n    --- Type Layout ---\n    type:Root\n\
            0 error(s).\nLayout of expected type:\n    --- Type Layout ---\n    type:Root\n\
            Layout of expected type:\n    --- Type Layout ---\n    type:Options\n\
            \n    data:\n        field_name:collection\nLayout of found type:\n\
            \n    type:Options\n\nError:incompatible type size\nExpected:\n    2\nFound:\n    3\n\
            \nError:too many fields\nExpected:\n    2\nFound:\n    3\n";
        assert_eq!(
            layout_summary(report),
            "type `Options`: incompatible type size (expected 2, found 3); type `Options`: too \
             many fields (expected 2, found 3) (full report with RUST_LOG=debug)"
        );
    }
}
