//! [`ConfigError`]: why a configuration was refused. It sits at the bottom of the config modules
//! (and under `auth::config`), so every section can name its errors without importing the
//! whole [`Config`](super::Config).

use std::path::PathBuf;

/// Why a configuration was refused. The message names the file and key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The TOML did not parse or a key is unknown or has the wrong type.
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// A key has a value outside its range.
    #[error("invalid config: {key}: {message}")]
    Invalid { key: &'static str, message: String },
    /// A command-line argument is wrong.
    #[error("invalid argument: {0}")]
    Argument(String),
    /// A Flashphoner WCS file (`--wcs-config`) has a wrong value, element or syntax.
    #[error("invalid WCS config {}:{line}: {key}: {message}", path.display())]
    Wcs {
        path: PathBuf,
        line: usize,
        key: String,
        message: String,
    },
}
