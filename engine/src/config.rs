//! The engine's TOML configuration: parsed, then validated, then handed to the builders of
//! the plugin registry, the chain and the server. Each field's `///` is its user
//! documentation; `config/tagcast.toml` shows them all.
//!
//! Errors name the file and, where the toml crate gives one, the line and column.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

/// Where `--config` points by default.
pub const DEFAULT_CONFIG_PATH: &str = "config/tagcast.toml";

/// The whole configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The directory where plugin libraries named without a path are looked up. Default: the
    /// directory of the tagcast executable. A relative path is relative to this file.
    pub plugin_dir: Option<PathBuf>,
    /// The listener.
    #[serde(default)]
    pub server: ServerConfig,
    /// Limits that protect the server from clients.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// The generator chain.
    #[serde(default)]
    pub chain: ChainConfig,
    /// Event-source supervision.
    #[serde(default)]
    pub sources: SourcesConfig,
    /// The demo task board and its write endpoints. Off unless enabled: never in production.
    #[serde(default)]
    pub demo: DemoConfig,
    /// One table per plugin, keyed by the plugin's name: `[plugins.entity-tags]`.
    #[serde(default)]
    pub plugins: BTreeMap<String, PluginConfig>,
}

/// `[server]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// The address to listen on, for WebSockets and HTTP alike. Port 0 picks a free port
    /// (the log line `listening` names it).
    pub listen: SocketAddr,
    /// On SIGINT or SIGTERM, how long in-flight HTTP requests may take to finish, in
    /// milliseconds, before the process exits anyway.
    pub shutdown_timeout_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            shutdown_timeout_ms: 10_000,
        }
    }
}

/// `[limits]`: each breach gives the client a clear error, never a stalled server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// The largest WebSocket message a client may send, in bytes; a larger one closes the
    /// connection with 1009.
    pub max_frame_bytes: usize,
    /// How many tags one connection may track.
    pub max_tags_per_connection: usize,
    /// The longest tag, in bytes.
    pub max_tag_bytes: usize,
    /// How many WebSocket connections one user may have open at once (anonymous
    /// connections are not counted per user).
    pub max_connections_per_user: usize,
    /// The largest HTTP request body, in bytes.
    pub max_body_bytes: usize,
    /// How often the server pings each WebSocket, in seconds.
    pub ping_interval_secs: u64,
    /// A WebSocket from which nothing (not even a pong) arrives for this many seconds is
    /// closed.
    pub idle_timeout_secs: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_frame_bytes: 64 * 1024,
            max_tags_per_connection: 1_000,
            max_tag_bytes: 256,
            max_connections_per_user: 64,
            max_body_bytes: 1024 * 1024,
            ping_interval_secs: 20,
            idle_timeout_secs: 60,
        }
    }
}

impl LimitsConfig {
    /// The ping interval as a duration.
    pub fn ping_interval(&self) -> Duration {
        Duration::from_secs(self.ping_interval_secs)
    }

    /// The idle timeout as a duration.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }
}

/// `[chain]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainConfig {
    /// The generators, by plugin name, in the order they run. Disabled plugins are skipped.
    #[serde(default)]
    pub generators: Vec<Spanned<String>>,
}

/// `[sources]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourcesConfig {
    /// The first restart delay after a source fails, in milliseconds; it doubles with each
    /// failure in a row.
    pub restart_initial_ms: u64,
    /// The longest restart delay, in milliseconds.
    pub restart_max_ms: u64,
    /// A source that ran this long without failing starts its backoff over, in milliseconds.
    pub restart_reset_ms: u64,
    /// On shutdown, how long sources may take to return, in milliseconds.
    pub shutdown_deadline_ms: u64,
    /// How many changes from sources may wait for the chain before `emit` blocks.
    pub queue: usize,
}

impl Default for SourcesConfig {
    fn default() -> Self {
        SourcesConfig {
            restart_initial_ms: 500,
            restart_max_ms: 30_000,
            restart_reset_ms: 60_000,
            shutdown_deadline_ms: 5_000,
            queue: 1_024,
        }
    }
}

/// `[demo]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DemoConfig {
    /// Serve the demo task board at `/` with its in-memory task store.
    pub enabled: bool,
}

/// `[plugins.<name>]`: one plugin.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Load this plugin. Default: true.
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    /// The library: a path (relative to this file), or a bare name looked up in the plugin
    /// directory as `lib<name>.so`. Default: the plugin's name with `-` as `_`.
    pub library: Option<String>,
    /// The plugin's own settings, handed to it untouched.
    #[serde(default)]
    pub settings: toml::Table,
}

fn enabled_by_default() -> bool {
    true
}

/// A parsed configuration and where it came from.
#[derive(Debug)]
pub struct LoadedConfig {
    /// The file it was read from.
    pub path: PathBuf,
    /// The file's text, kept for locating keys in error messages.
    pub text: String,
    /// The configuration.
    pub config: Config,
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read config file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or has an unknown key or a bad value.
    #[error("{}: {table}{}", path.display(), detail.trim_end())]
    Parse {
        /// The file.
        path: PathBuf,
        /// `in [plugins.x]: ` when the error lies inside a plugin's table, else empty: toml's
        /// message quotes the line, not the table it sits in.
        table: String,
        /// The toml crate's message, with line and column.
        detail: String,
    },
    /// The file parses but does not make sense.
    #[error("{}: {location}{message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// `line L, column C: ` or empty.
        location: Location,
        /// What is wrong and what to do.
        message: String,
    },
}

/// A line and column in the config file, shown as `line L, column C: `; empty when unknown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Location(pub Option<(usize, usize)>);

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some((line, column)) => write!(f, "line {line}, column {column}: "),
            None => Ok(()),
        }
    }
}

impl LoadedConfig {
    /// Reads, parses and validates `path`.
    pub fn load(path: &Path) -> Result<LoadedConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        LoadedConfig::parse(path, text)
    }

    /// Parses and validates `text`, read from `path`.
    pub fn parse(path: &Path, text: String) -> Result<LoadedConfig, ConfigError> {
        let config: Config = toml::from_str(&text).map_err(|err| ConfigError::Parse {
            path: path.to_owned(),
            table: err
                .span()
                .and_then(|span| plugin_table_at(&text, span.start))
                .map(|name| format!("in [plugins.{name}]: "))
                .unwrap_or_default(),
            detail: err.to_string(),
        })?;
        let loaded = LoadedConfig {
            path: path.to_owned(),
            text,
            config,
        };
        loaded.validate()?;
        Ok(loaded)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let mut seen: Vec<&str> = Vec::new();
        for entry in &self.config.chain.generators {
            let name = entry.get_ref().as_str();
            if seen.contains(&name) {
                return Err(self.invalid_at(
                    entry.span(),
                    format!("chain.generators lists `{name}` twice; list each generator once"),
                ));
            }
            seen.push(name);
            if !self.config.plugins.contains_key(name) {
                return Err(self.invalid_at(
                    entry.span(),
                    format!(
                        "chain.generators lists `{name}`, which has no [plugins.{name}] table; \
                         add one or remove it from the chain"
                    ),
                ));
            }
        }

        let limits = &self.config.limits;
        for (key, value) in [
            ("max_frame_bytes", limits.max_frame_bytes),
            ("max_tags_per_connection", limits.max_tags_per_connection),
            ("max_tag_bytes", limits.max_tag_bytes),
            ("max_connections_per_user", limits.max_connections_per_user),
            ("max_body_bytes", limits.max_body_bytes),
            ("ping_interval_secs", limits.ping_interval_secs as usize),
            ("idle_timeout_secs", limits.idle_timeout_secs as usize),
        ] {
            if value == 0 {
                return Err(self.invalid_key(
                    &["limits", key],
                    format!("limits.{key} must be greater than 0"),
                ));
            }
        }
        if limits.idle_timeout_secs <= limits.ping_interval_secs {
            return Err(self.invalid_key(
                &["limits", "idle_timeout_secs"],
                "limits.idle_timeout_secs must be longer than limits.ping_interval_secs, or \
                 every quiet but healthy connection would be closed"
                    .to_owned(),
            ));
        }
        let sources = &self.config.sources;
        if sources.queue == 0 || sources.restart_initial_ms == 0 {
            return Err(self.invalid_key(
                &["sources"],
                "sources.queue and sources.restart_initial_ms must be greater than 0".to_owned(),
            ));
        }
        Ok(())
    }

    /// The directory relative paths in this file are resolved against.
    pub fn base_dir(&self) -> &Path {
        match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        }
    }

    /// An [`ConfigError::Invalid`] located at a byte range of the file.
    pub fn invalid_at(&self, span: Range<usize>, message: String) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.clone(),
            location: Location(Some(line_column(&self.text, span.start))),
            message,
        }
    }

    /// An [`ConfigError::Invalid`] located at the key at `path` (such as
    /// `["plugins", "entity-tags", "settings", "id_field"]`), or at the nearest enclosing
    /// key that exists in the file.
    pub fn invalid_key(&self, path: &[&str], message: String) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.clone(),
            location: Location(self.locate(path)),
            message,
        }
    }

    /// The line and column of the key at `path`, or of the deepest prefix of it present.
    pub fn locate(&self, path: &[&str]) -> Option<(usize, usize)> {
        let doc = toml::de::DeTable::parse(&self.text).ok()?;
        let mut table = doc.get_ref();
        let mut found = None;
        for (depth, key) in path.iter().enumerate() {
            let Some((k, v)) = table.iter().find(|(k, _)| k.get_ref().as_ref() == *key) else {
                break;
            };
            found = Some(k.span().start);
            match v.get_ref() {
                toml::de::DeValue::Table(inner) if depth + 1 < path.len() => table = inner,
                _ => break,
            }
        }
        found.map(|offset| line_column(&self.text, offset))
    }
}

/// The name of the `[plugins.<name>]` table whose span holds byte `offset`, if any.
fn plugin_table_at(text: &str, offset: usize) -> Option<String> {
    let doc = toml::de::DeTable::parse(text).ok()?;
    let (_, plugins) = doc
        .get_ref()
        .iter()
        .find(|(k, _)| k.get_ref().as_ref() == "plugins")?;
    let toml::de::DeValue::Table(plugins) = plugins.get_ref() else {
        return None;
    };
    // A table's span covers its header or its inline body; a key inside a `[plugins.x]`
    // section lies after that header and before the next one, so the last table starting
    // at or before `offset` is the one.
    plugins
        .iter()
        .filter(|(k, _)| k.span().start <= offset)
        .max_by_key(|(k, _)| k.span().start)
        .map(|(k, _)| k.get_ref().to_string())
}

/// 1-based line and column of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1)
        + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<LoadedConfig, ConfigError> {
        LoadedConfig::parse(Path::new("test.toml"), text.to_owned())
    }

    #[test]
    fn empty_file_gives_safe_defaults() {
        let loaded = parse("").unwrap();
        assert_eq!(loaded.config.server.listen.to_string(), "127.0.0.1:7070");
        assert_eq!(loaded.config.limits.max_tag_bytes, 256);
        assert!(!loaded.config.demo.enabled);
        assert!(loaded.config.plugins.is_empty());
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let err = parse("[server]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("test.toml: "), "{text}");
        assert!(text.contains("line 3"), "{text}");
        assert!(text.contains("lisen"), "{text}");
    }

    #[test]
    fn unknown_plugin_table_key_is_rejected() {
        let err = parse("[plugins.a]\nlibary = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("libary") && err.contains("line 2"), "{err}");
    }

    #[test]
    fn unknown_key_in_a_plugin_table_names_the_plugin() {
        let err = parse("[plugins.a]\n[plugins.b]\nlibary = \"x\"\n[server]\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("test.toml: in [plugins.b]: "), "{err}");
        let err = parse("[server]\nlisen = 1\n").unwrap_err().to_string();
        assert!(!err.contains("in [plugins"), "{err}");
    }

    #[test]
    fn plugin_settings_are_kept_untouched() {
        let loaded = parse("[plugins.a.settings]\nanything = [1, \"x\"]\n").unwrap();
        let plugin = &loaded.config.plugins["a"];
        assert!(plugin.enabled);
        assert_eq!(plugin.settings["anything"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn chain_entry_without_plugin_table_is_located() {
        let err = parse("[chain]\ngenerators = [\"a\", \"b\"]\n[plugins.a]\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "test.toml: line 2, column 20: chain.generators lists `b`, which has no \
             [plugins.b] table; add one or remove it from the chain"
        );
    }

    #[test]
    fn duplicate_chain_entry_is_rejected() {
        let err = parse("[chain]\ngenerators = [\"a\", \"a\"]\n[plugins.a]\n").unwrap_err();
        assert!(err.to_string().contains("twice"), "{err}");
    }

    #[test]
    fn zero_limit_is_rejected_at_its_key() {
        let err = parse("[limits]\nmax_tag_bytes = 0\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 2, column 1") && err.contains("max_tag_bytes"),
            "{err}"
        );
    }

    #[test]
    fn locates_nested_settings_keys() {
        let loaded = parse("[plugins.a]\n[plugins.a.settings]\nx = 1\n  id_field = 2\n").unwrap();
        assert_eq!(
            loaded.locate(&["plugins", "a", "settings", "id_field"]),
            Some((4, 3))
        );
        assert_eq!(
            loaded.locate(&["plugins", "a", "settings", "nope"]),
            Some((2, 12))
        );
    }

    #[test]
    fn every_shipped_config_file_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
        let mut count = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            // Dotfiles are temporary copies other tests make.
            let hidden = path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'));
            if !hidden && path.extension().is_some_and(|e| e == "toml") {
                LoadedConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
                count += 1;
            }
        }
        assert!(count > 0, "no config files found in {}", dir.display());
    }
}
