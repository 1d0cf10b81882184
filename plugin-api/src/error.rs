//! The error a plugin returns from its own code, and its conversion to the ABI form.

use std::fmt;

use abi_stable::std_types::{ROption, RString};

use crate::abi::{ErrorKind, PluginError};

/// An error from plugin code: a bad configuration or a failed operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    key: Option<String>,
}

impl Error {
    /// An operation failed.
    pub fn new(message: impl Into<String>) -> Error {
        Error {
            kind: ErrorKind::Failed,
            message: message.into(),
            key: None,
        }
    }

    /// The plugin's settings are wrong; `key` names the offending setting when known.
    pub fn config(key: Option<&str>, message: impl Into<String>) -> Error {
        Error {
            kind: ErrorKind::Config,
            message: message.into(),
            key: key.map(str::to_owned),
        }
    }

    pub(crate) fn panic(message: String) -> Error {
        Error {
            kind: ErrorKind::Panic,
            message,
            key: None,
        }
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message, without the plugin's name.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The settings key at fault, for configuration errors.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    pub(crate) fn into_abi(self, plugin: &str) -> PluginError {
        PluginError {
            plugin: plugin.into(),
            kind: self.kind,
            message: self.message.into(),
            key: self.key.map(RString::from).into(),
        }
    }

    pub(crate) fn from_abi(err: PluginError) -> Error {
        Error {
            kind: err.kind,
            message: err.message.into(),
            key: match err.key {
                ROption::RSome(k) => Some(k.into()),
                ROption::RNone => None,
            },
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.kind, &self.key) {
            (ErrorKind::Config, Some(key)) => write!(f, "setting `{key}`: {}", self.message),
            (ErrorKind::Panic, _) => write!(f, "panicked: {}", self.message),
            _ => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for Error {}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "plugin `{}`: ", self.plugin)?;
        fmt::Display::fmt(&Error::from_abi(self.clone()), f)
    }
}

impl std::error::Error for PluginError {}
