//! [`ConfigError`]: what is wrong with a config, and where.

use std::path::{Path, PathBuf};

/// Why a config could not be used. Every variant names where the problem is:
/// a file, a key path such as `routes[1].limit.value`, or a command-line flag,
/// so the operator can fix it without reading floodwall's source.
///
/// The wrapped I/O and TOML errors are part of the message rather than
/// [`std::error::Error::source`], so printing the error with its chain (as
/// `anyhow` does) does not say the same thing twice.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {}: {error}", path.display())]
    Read {
        /// The file we tried to read.
        path: PathBuf,
        /// What the operating system said.
        error: std::io::Error,
    },
    /// The text is not TOML, or does not fit the schema: a syntax error, an
    /// unknown or misspelt key, a value of the wrong type. The TOML error
    /// carries the line, the column and the offending text.
    #[error("cannot parse {}: {error}", origin(path.as_deref()))]
    Parse {
        /// The file, if the text came from one.
        path: Option<PathBuf>,
        /// The TOML error, with line, column and a snippet.
        error: toml::de::Error,
    },
    /// The config parsed but a value is not allowed.
    #[error("{}{key}: {message}", file_prefix(path.as_deref()))]
    Invalid {
        /// The file, if the config came from one.
        path: Option<PathBuf>,
        /// The key path, e.g. `routes[1].limit.value` (indices count from 0).
        key: String,
        /// What is wrong and, where it helps, what was found.
        message: String,
    },
    /// A command-line flag cannot be applied to this config.
    #[error("{flag}: {message}")]
    Flag {
        /// The flag, e.g. `--upstream`.
        flag: &'static str,
        /// What is wrong.
        message: String,
    },
}

impl ConfigError {
    /// The key path (e.g. `routes[1].limit.value`) or flag (e.g.
    /// `--upstream`) the error is about, if it is about one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            ConfigError::Flag { flag, .. } => Some(flag),
            ConfigError::Read { .. } | ConfigError::Parse { .. } => None,
        }
    }

    pub(super) fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: None,
            key: key.into(),
            message: message.into(),
        }
    }

    /// Records which file a validation error came from.
    pub(super) fn in_file(self, file: &Path) -> ConfigError {
        match self {
            ConfigError::Invalid { key, message, .. } => ConfigError::Invalid {
                path: Some(file.to_path_buf()),
                key,
                message,
            },
            other => other,
        }
    }
}

fn origin(path: Option<&Path>) -> String {
    match path {
        Some(path) => format!("config file {}", path.display()),
        None => "config".to_owned(),
    }
}

fn file_prefix(path: Option<&Path>) -> String {
    match path {
        Some(path) => format!("{}: ", path.display()),
        None => String::new(),
    }
}
