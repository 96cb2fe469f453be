//! Configuration pipeline: layers → merged tree → one validation pass → [`Settings`].
//!
//! 1. [`sources`]: the embedded `configs/default.toml`, then each `-c FILE` in
//!    order, then `USHER__SECTION__KEY` environment variables, merged key by
//!    key with the `config` crate. Every key remembers the layer it came from.
//! 2. [`build`]: walks the merged tree once, parses every key into its typed
//!    knob, rejects unknown keys in core sections and checks cross references.
//!    It never stops at the first problem: all of them are collected into
//!    [`ConfigErrors`], each naming the key, its layer and what was expected.
//! 3. [`settings`]: the typed result the broker runs on. It serializes back to
//!    TOML, which is what `usher check` prints.

mod build;
mod cluster_section;
mod discovery_section;
mod errors;
mod extension_section;
mod queue_section;
mod reader;
mod reload_outcome;
mod routes_section;
mod settings;
mod sources;
mod spawn_section;

pub use cluster_section::CLUSTER_BUILT_IN;
pub use discovery_section::{DnsForm, DnsOrigin, DnsSource, RecordKind, ResolverSettings};
pub use errors::{ConfigError, ConfigErrorKind, ConfigErrors};
pub use extension_section::{
    ExtensionCatalog, HookSettings, NoExtensions, OnHookTimeout, OptionProblem, BUILT_IN_BALANCERS,
};
pub use queue_section::{CodelSettings, FairShare, PerSourceSettings, QueueDiscipline, QueueSettings};
pub use reader::MAX_DURATION;
pub use reload_outcome::{ReloadChange, ReloadError, ReloadSummary, RestartKey};
pub use settings::*;
pub use sources::{ConfigSources, EnvLayer, DEFAULT_TOML};
pub use spawn_section::{slot_name, ReadyProbe, SpawnSettings, StopSignal, ADDRESS_PLACEHOLDER, PORT_PLACEHOLDER};

/// Loads, merges and validates the layers named by `sources`.
/// No extension is registered: any hook name is an error.
pub fn load(sources: &ConfigSources) -> Result<Settings, ConfigErrors> {
    load_with(sources, &NoExtensions)
}

/// Like [`load`], with the extensions `catalog` registers: their names and
/// options are checked in the same pass, and reported with the core's errors.
pub fn load_with(sources: &ConfigSources, catalog: &dyn ExtensionCatalog) -> Result<Settings, ConfigErrors> {
    let merged = sources.merge()?;
    build::settings(&merged, catalog)
}

/// Parses one TOML document on top of the built-in defaults (no files, no
/// environment). Meant for tests and embedders.
pub fn from_toml_str(toml: &str) -> Result<Settings, ConfigErrors> {
    load(&ConfigSources::inline(toml))
}
