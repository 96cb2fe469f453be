//! Configuration errors: each names the key, the layer it came from and what
//! was expected, so an operator can fix every problem in one go.

use std::fmt;

/// What kind of problem a [`ConfigError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConfigErrorKind {
    /// A layer cannot be read (a file, the environment).
    Unreadable,
    /// A layer is not valid TOML, or the layers do not merge.
    Syntax,
    /// A required key is set in no layer.
    Missing,
    /// A key is set to something it cannot be (type, range, unknown key,
    /// dangling reference).
    Invalid,
}

/// One problem found in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub kind: ConfigErrorKind,
    /// Dotted key, e.g. `backends.app.timeout.queue`.
    pub key: String,
    /// The layer the offending value came from, e.g. `file ./usher.toml`.
    pub origin: String,
    /// What is wrong and what was expected.
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} (from {})", self.key, self.problem, self.origin)
    }
}

/// Every problem found in one validation pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    pub fn single(
        kind: ConfigErrorKind,
        key: impl Into<String>,
        origin: impl Into<String>,
        problem: impl Into<String>,
    ) -> Self {
        ConfigErrors(vec![ConfigError { kind, key: key.into(), origin: origin.into(), problem: problem.into() }])
    }

    /// True when some error concerns `key` (tests and tooling).
    pub fn mentions(&self, key: &str) -> bool {
        self.0.iter().any(|err| err.key == key)
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(f, "invalid configuration: {n} problem{}", if n == 1 { "" } else { "s" })?;
        for err in &self.0 {
            writeln!(f, "  - {err}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}
