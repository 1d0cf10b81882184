//! tagcast: routes "content outdated" notifications from change sources to the browsers that
//! track the changed content.
//!
//! The modules follow the data: [`config`] → [`plugins`] (loaded libraries) → [`chain`]
//! (data to tags) → [`sources`] (supervised event sources) → [`hub`] (tag routing to
//! subscribers) → [`server`] (WebSocket and HTTP). `docs/architecture.md` tells how a change
//! flows through them and which task owns what.

pub mod chain;
pub mod config;
mod demo;
pub mod hub;
pub mod identity;
pub mod metrics;
pub mod plugins;
pub mod publish;
pub mod server;
pub mod sources;

use std::path::Path;
use std::sync::Arc;

pub use chain::Chain;
pub use config::{ConfigError, LoadedConfig};
pub use plugins::{LoadError, Registry};

/// An engine that cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A bad configuration, including a plugin's settings.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A plugin library that cannot be loaded.
    #[error(transparent)]
    Plugins(#[from] LoadError),
    /// An operating-system resource could not be had.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The cause.
        source: std::io::Error,
    },
    /// The listener cannot be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The configured address.
        addr: std::net::SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

impl StartError {
    /// The process exit code for this error: 2 for bad config or plugins, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            StartError::Config(_) | StartError::Plugins(_) => 2,
            StartError::Bind { .. } | StartError::Io { .. } => 1,
        }
    }
}

/// The configuration, the loaded plugins and the chain: everything every command needs.
pub struct Engine {
    /// The parsed configuration.
    pub config: LoadedConfig,
    /// The loaded plugin libraries.
    pub registry: Registry,
    /// The generator chain, shared with every task that makes tags.
    pub chain: Arc<Chain>,
}

impl Engine {
    /// Loads the config at `path`, its plugins, and builds the chain.
    pub fn load(path: &Path) -> Result<Engine, StartError> {
        let config = LoadedConfig::load(path)?;
        tracing::info!(path = %path.display(), "config loaded");
        let registry = Registry::load(&config)?;
        let chain = Arc::new(Chain::build(&config, &registry)?);
        Ok(Engine {
            config,
            registry,
            chain,
        })
    }

    /// Builds every enabled plugin's generator and source once, so that bad settings of a
    /// plugin outside the chain, or of a source, are found now and not when first used.
    /// Sources are only built, never run.
    pub fn check_plugins(&self) -> Result<(), StartError> {
        for plugin in self.registry.plugins() {
            if plugin.generator {
                plugin
                    .new_generator()
                    .map_err(|err| plugins::settings_error(&self.config, &plugin.name, &err))?;
            }
            if plugin.source {
                plugin
                    .new_source()
                    .map_err(|err| plugins::settings_error(&self.config, &plugin.name, &err))?;
            }
        }
        Ok(())
    }
}
