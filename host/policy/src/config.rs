//! A mistake in one of Airlock's configuration files.

/// A setting that cannot be used: whose file it is in, and what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file} config: {message}")]
pub struct ConfigError {
    /// Whose file: `serve`, `identity service`, `binding service`.
    pub file: &'static str,
    /// What is wrong, naming the setting, and how to fix it.
    pub message: String,
}

impl ConfigError {
    /// A mistake in `file`'s config.
    pub fn new(file: &'static str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file,
            message: message.into(),
        }
    }

    /// The same mistake, prefixed with where it is (`at`, a table).
    pub fn at(self, at: &str) -> ConfigError {
        ConfigError {
            message: format!("{at}: {}", self.message),
            ..self
        }
    }
}
