//! The plugin registry: resolves each enabled `[plugins.<name>]` table to a library, opens
//! it, checks that its manifest name is the table's name, hands it the host logger, and
//! keeps what the chain and the source supervisor need to build generators and sources.

mod loader;
mod log;

use std::path::{Path, PathBuf};

use abi_stable::std_types::{RResult, RStr};
use tagcast_plugin_api::abi::{GeneratorBox, PluginError, PluginModRef, SourceBox};
use tagcast_plugin_api::ErrorKind;
use tracing::info;

use crate::config::{ConfigError, LoadedConfig};
pub use loader::OpenError;

/// A loaded plugin library.
pub struct Plugin {
    /// The plugin's name, from its manifest (equal to its table's name).
    pub name: String,
    /// The plugin's own version.
    pub version: String,
    /// The plugin-api version it was built against.
    pub api_version: String,
    /// The library file.
    pub library: PathBuf,
    /// Whether it provides a generator.
    pub generator: bool,
    /// Whether it provides a source.
    pub source: bool,
    module: PluginModRef,
    /// The plugin's settings table as TOML text, handed to its constructors.
    settings: String,
}

/// Builds fresh instances of one plugin's source; owned by that source's thread.
pub struct SourceFactory {
    module: PluginModRef,
    settings: String,
}

impl SourceFactory {
    /// Builds a source from the plugin's settings.
    pub fn new_source(&self) -> Result<SourceBox, PluginError> {
        into_result((self.module.new_source())(RStr::from_str(&self.settings)))
    }
}

/// Every enabled plugin, in config order (by name).
pub struct Registry {
    plugins: Vec<Plugin>,
}

/// Why the plugins could not be loaded: always names the config file and the plugin.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A config problem found while loading (missing library, bad settings...).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A library that is not a compatible tagcast plugin.
    #[error("{}: plugin `{plugin}`", config.display())]
    Open {
        /// The config file.
        config: PathBuf,
        /// The plugin's table name.
        plugin: String,
        /// Why it was refused.
        source: OpenError,
    },
}

impl Registry {
    /// Loads every enabled plugin of `config`.
    pub fn load(config: &LoadedConfig) -> Result<Registry, LoadError> {
        let plugin_dir = plugin_dir(config);
        let mut plugins: Vec<Plugin> = Vec::new();
        for (name, table) in &config.config.plugins {
            if !table.enabled {
                info!(plugin = %name, "plugin disabled in config");
                continue;
            }
            let path = resolve_library(config, &plugin_dir, name, table.library.as_deref())?;
            let opened = loader::open(&path).map_err(|source| LoadError::Open {
                config: config.path.clone(),
                plugin: name.clone(),
                source,
            })?;
            let manifest = opened.manifest;
            let found = manifest.name.as_str();
            if found != name {
                let message = match plugins.iter().find(|p| p.name == found) {
                    Some(first) => format!(
                        "two plugins named `{found}`: [plugins.{found}] ({}) and \
                         [plugins.{name}] ({}); load each plugin once",
                        first.library.display(),
                        path.display()
                    ),
                    None => format!(
                        "[plugins.{name}] loads {}, which is the plugin `{found}`; name the \
                         table [plugins.{found}] or point `library` at the `{name}` plugin",
                        path.display()
                    ),
                };
                return Err(config.invalid_key(&["plugins", name], message).into());
            }
            (opened.module.set_logger())(log::host_logger());
            let settings = toml::to_string(&table.settings).map_err(|err| {
                config.invalid_key(
                    &["plugins", name, "settings"],
                    format!("plugin `{name}`: settings cannot be passed on: {err}"),
                )
            })?;
            info!(
                plugin = %name,
                version = %manifest.version,
                api_version = %manifest.api_version,
                library = %path.display(),
                "plugin loaded"
            );
            plugins.push(Plugin {
                name: name.clone(),
                version: manifest.version.to_string(),
                api_version: manifest.api_version.to_string(),
                library: path,
                generator: manifest.generator,
                source: manifest.source,
                module: opened.module,
                settings,
            });
        }
        Ok(Registry { plugins })
    }

    /// The loaded plugins.
    pub fn plugins(&self) -> &[Plugin] {
        &self.plugins
    }

    /// The plugin called `name`, if loaded.
    pub fn get(&self, name: &str) -> Option<&Plugin> {
        self.plugins.iter().find(|p| p.name == name)
    }
}

impl Plugin {
    /// Builds the plugin's generator from its settings.
    pub fn new_generator(&self) -> Result<GeneratorBox, PluginError> {
        into_result((self.module.new_generator())(RStr::from_str(
            &self.settings,
        )))
    }

    /// Builds a fresh instance of the plugin's source from its settings.
    pub fn new_source(&self) -> Result<SourceBox, PluginError> {
        self.source_factory().new_source()
    }

    /// What a source thread needs to rebuild the plugin's source after a failure.
    pub fn source_factory(&self) -> SourceFactory {
        SourceFactory {
            module: self.module,
            settings: self.settings.clone(),
        }
    }

    /// The kinds this plugin provides, for display.
    pub fn kinds(&self) -> Vec<&'static str> {
        let mut kinds = Vec::new();
        if self.generator {
            kinds.push("generator");
        }
        if self.source {
            kinds.push("source");
        }
        kinds
    }
}

/// Maps a plugin's refusal of its settings to a config error located at the key.
pub fn settings_error(config: &LoadedConfig, plugin: &str, err: &PluginError) -> ConfigError {
    let key = err.key.as_ref().map(|k| k.as_str()).into_option();
    let what = match err.kind {
        ErrorKind::Config => "rejected its settings",
        ErrorKind::Panic => "panicked while reading its settings",
        ErrorKind::Failed => "failed to start",
    };
    let mut path = vec!["plugins", plugin, "settings"];
    let message = match key {
        Some(key) => {
            path.push(key);
            format!("plugin `{plugin}` {what}: key `{key}`: {}", err.message)
        }
        None => format!("plugin `{plugin}` {what}: {}", err.message),
    };
    config.invalid_key(&path, message)
}

fn into_result<T>(r: RResult<T, PluginError>) -> Result<T, PluginError> {
    r.into_result()
}

/// The configured plugin directory, or the directory of the running executable.
fn plugin_dir(config: &LoadedConfig) -> PathBuf {
    match &config.config.plugin_dir {
        Some(dir) => config.base_dir().join(dir),
        None => std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(Path::to_owned))
            .unwrap_or_else(|| PathBuf::from(".")),
    }
}

/// The file name a library called `name` has on this platform.
fn library_file_name(name: &str) -> String {
    format!(
        "{}{}{}",
        std::env::consts::DLL_PREFIX,
        name.replace('-', "_"),
        std::env::consts::DLL_SUFFIX
    )
}

fn resolve_library(
    config: &LoadedConfig,
    plugin_dir: &Path,
    name: &str,
    library: Option<&str>,
) -> Result<PathBuf, ConfigError> {
    let is_path =
        library.is_some_and(|l| l.contains('/') || l.ends_with(std::env::consts::DLL_SUFFIX));
    let path = match library {
        Some(l) if is_path => config.base_dir().join(l),
        Some(l) => plugin_dir.join(library_file_name(l)),
        None => plugin_dir.join(library_file_name(name)),
    };
    if path.is_file() {
        return Ok(path);
    }
    let message = if library.is_none() {
        let found = scan(plugin_dir);
        format!(
            "no plugin named `{name}` in {} (looked for {}); plugins found there: {}. Set \
             plugins.{name}.library, or plugin_dir",
            plugin_dir.display(),
            library_file_name(name),
            if found.is_empty() {
                "none".to_owned()
            } else {
                found.join(", ")
            }
        )
    } else {
        format!(
            "plugin `{name}`: library not found: {}; check plugins.{name}.library",
            path.display()
        )
    };
    let key: &[&str] = if library.is_some() {
        &["plugins", name, "library"]
    } else {
        &["plugins", name]
    };
    Err(config.invalid_key(key, message))
}

/// The names of the plugins among the libraries in `dir`, for error messages.
fn scan(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension().and_then(|e| e.to_str())
                == Some(std::env::consts::DLL_SUFFIX.trim_start_matches('.'))
        })
        .filter_map(|p| loader::open(&p).ok())
        .map(|opened| opened.manifest.name.to_string())
        .collect();
    names.sort();
    names.dedup();
    names
}
