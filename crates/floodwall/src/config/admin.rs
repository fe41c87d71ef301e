//! `[admin]`: who may use the admin port.
//!
//! Tokens are read from files (or an environment variable), never from the
//! config text or the command line: a config file is often world-readable
//! and checked into a repository, and `ps` shows every process's arguments
//! to every user of the host.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::error::ConfigError;

/// The environment variable that holds the admin token when
/// `admin.token_file` is not set.
pub const TOKEN_ENV: &str = "FLOODWALL_ADMIN_TOKEN";
/// The environment variable that holds the read token when
/// `admin.read_token_file` is not set.
pub const READ_TOKEN_ENV: &str = "FLOODWALL_ADMIN_READ_TOKEN";

/// The shortest token accepted, in bytes: shorter ones can be guessed.
pub const MIN_TOKEN_LEN: usize = 16;

/// Who may use the admin port (`[admin]`). Its address is `server.admin`,
/// loopback by default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// A file holding the bearer token that mutating endpoints (`POST
    /// /reload`) require, as `Authorization: Bearer <token>`. Unset, the
    /// token comes from `FLOODWALL_ADMIN_TOKEN`; with neither, mutating
    /// endpoints answer 403. Trailing whitespace is ignored; re-read on
    /// every reload, so a token is rotated by rewriting the file and
    /// reloading.
    pub token_file: Option<PathBuf>,
    /// A file holding a second token that reads (`/status`, `/metrics`,
    /// `/`, `/history.json`) then require; the admin token is accepted for
    /// reads too. Unset, it comes from `FLOODWALL_ADMIN_READ_TOKEN`; with
    /// neither, reads are open, which is right on loopback. `/healthz` and
    /// `/readyz` stay open for probes whatever this says.
    pub read_token_file: Option<PathBuf>,
}

/// The tokens of an [`AdminConfig`], read.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AdminTokens {
    /// The token mutating endpoints require, if one is configured.
    pub write: Option<String>,
    /// The token reads require, if one is configured.
    pub read: Option<String>,
}

impl std::fmt::Debug for AdminTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a token, even in a debug log.
        f.debug_struct("AdminTokens")
            .field("write", &self.write.as_ref().map(|_| "***"))
            .field("read", &self.read.as_ref().map(|_| "***"))
            .finish()
    }
}

impl AdminConfig {
    /// Checks that the token files, if set, hold usable tokens.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        for (key, path) in [
            ("admin.token_file", &self.token_file),
            ("admin.read_token_file", &self.read_token_file),
        ] {
            if let Some(path) = path {
                read_token(path).map_err(|m| ConfigError::invalid(key, m))?;
            }
        }
        Ok(())
    }

    /// Reads the tokens: each from its file if set, else from its
    /// environment variable. Errors name the key or the variable.
    pub fn tokens(&self) -> Result<AdminTokens, ConfigError> {
        let one = |key: &str, file: &Option<PathBuf>, env: &'static str| match file {
            Some(path) => read_token(path)
                .map(Some)
                .map_err(|m| ConfigError::invalid(key, m)),
            None => match std::env::var(env) {
                Ok(v) => check_token(v.trim())
                    .map(|t| Some(t.to_owned()))
                    .map_err(|m| ConfigError::invalid(env, m)),
                Err(_) => Ok(None),
            },
        };
        Ok(AdminTokens {
            write: one("admin.token_file", &self.token_file, TOKEN_ENV)?,
            read: one(
                "admin.read_token_file",
                &self.read_token_file,
                READ_TOKEN_ENV,
            )?,
        })
    }
}

fn read_token(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    check_token(text.trim())
        .map(str::to_owned)
        .map_err(|m| format!("{}: {m}", path.display()))
}

fn check_token(token: &str) -> Result<&str, String> {
    if token.len() < MIN_TOKEN_LEN {
        return Err(format!(
            "the token is {} bytes; at least {MIN_TOKEN_LEN} are required",
            token.len()
        ));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the token must be visible ASCII, with no spaces".into());
    }
    Ok(token)
}
