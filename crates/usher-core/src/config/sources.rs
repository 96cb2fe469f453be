//! The configuration layers and where each key came from.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use config::{Config, Environment, File, FileFormat, Map, Source, Value, ValueKind};

use super::errors::{ConfigErrorKind, ConfigErrors};

/// `configs/default.toml`, embedded: every key with its default.
pub const DEFAULT_TOML: &str = include_str!("../../../../configs/default.toml");

/// Prefix of environment overrides: `USHER__GLOBAL__MAXCONN=500`.
pub const ENV_PREFIX: &str = "USHER";
/// Separator between the prefix and the levels of a key in a variable name.
pub const ENV_SEPARATOR: &str = "__";

/// Where the environment layer is read from.
#[derive(Debug, Clone, Default)]
pub enum EnvLayer {
    /// The process environment (the daemon).
    #[default]
    Process,
    /// A fixed set of variables (tests: no `set_var` races between threads).
    Vars(HashMap<String, String>),
    /// No environment layer.
    None,
}

/// The layers to merge, lowest precedence first after the built-in defaults.
#[derive(Debug, Clone, Default)]
pub struct ConfigSources {
    /// TOML documents given inline (tests, embedders), applied before files.
    pub inline: Vec<String>,
    /// Files given with `-c`, in order.
    pub files: Vec<PathBuf>,
    /// Environment overrides, applied last.
    pub env: EnvLayer,
}

impl ConfigSources {
    /// Defaults, then `files`, then the process environment.
    pub fn files(files: Vec<PathBuf>) -> Self {
        ConfigSources { inline: Vec::new(), files, env: EnvLayer::Process }
    }

    /// Defaults, then one inline document; no environment.
    pub fn inline(toml: &str) -> Self {
        ConfigSources { inline: vec![toml.to_owned()], files: Vec::new(), env: EnvLayer::None }
    }

    pub(super) fn merge(&self) -> Result<Merged, ConfigErrors> {
        let mut builder = Config::builder();
        let mut origins = Origins::default();
        let mut errors = Vec::new();

        builder = add_toml(builder, &mut origins, &mut errors, "built-in defaults".into(), DEFAULT_TOML);
        for (i, text) in self.inline.iter().enumerate() {
            builder = add_toml(builder, &mut origins, &mut errors, format!("inline document #{}", i + 1), text);
        }
        for path in &self.files {
            let origin = format!("file {}", path.display());
            match std::fs::read_to_string(path) {
                Ok(text) => builder = add_toml(builder, &mut origins, &mut errors, origin, &text),
                Err(err) => errors.push(super::ConfigError {
                    kind: ConfigErrorKind::Unreadable,
                    key: "(file)".into(),
                    origin,
                    problem: format!("cannot read it: {err}"),
                }),
            }
        }
        let env = match &self.env {
            EnvLayer::Process => Some(environment()),
            EnvLayer::Vars(vars) => Some(environment().source(Some(vars.clone().into_iter().collect()))),
            EnvLayer::None => None,
        };
        if let Some(env) = env {
            match env.collect() {
                Ok(flat) => {
                    for key in flat.keys() {
                        let var =
                            format!("{ENV_PREFIX}{ENV_SEPARATOR}{}", key.to_uppercase().replace('.', ENV_SEPARATOR));
                        origins.add_path(format!("environment variable {var}"), key);
                    }
                    builder = builder.add_source(env);
                }
                Err(err) => errors.push(super::ConfigError {
                    kind: ConfigErrorKind::Unreadable,
                    key: "(environment)".into(),
                    origin: "the environment".into(),
                    problem: err.to_string(),
                }),
            }
        }
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        let unmerged = |err: config::ConfigError| {
            ConfigErrors::single(
                ConfigErrorKind::Syntax,
                "(merge)",
                "all layers",
                format!("layers do not merge: {err}"),
            )
        };
        let root = builder.build().map_err(unmerged)?.collect().map_err(unmerged)?;
        Ok(Merged { root, origins })
    }
}

type Builder = config::ConfigBuilder<config::builder::DefaultState>;

/// Adds one TOML layer, recording its keys; a document that does not parse
/// is reported and skipped so the other layers are still checked.
fn add_toml(
    builder: Builder,
    origins: &mut Origins,
    errors: &mut Vec<super::ConfigError>,
    origin: String,
    text: &str,
) -> Builder {
    let layer = File::from_str(text, FileFormat::Toml);
    match layer.collect() {
        Ok(map) => {
            origins.add(origin, &map);
            builder.add_source(layer)
        }
        Err(err) => {
            errors.push(super::ConfigError {
                kind: ConfigErrorKind::Syntax,
                key: "(document)".into(),
                origin,
                problem: format!("not valid TOML: {err}"),
            });
            builder
        }
    }
}

fn environment() -> Environment {
    Environment::with_prefix(ENV_PREFIX).prefix_separator(ENV_SEPARATOR).separator(ENV_SEPARATOR).try_parsing(true)
}

/// The merged tree and the layer of each key.
pub(super) struct Merged {
    pub root: Map<String, Value>,
    pub origins: Origins,
}

/// For every dotted key, the layers that set it (the last one wins).
#[derive(Default)]
pub(super) struct Origins {
    layers: Vec<(String, HashSet<String>)>,
}

impl Origins {
    fn add(&mut self, origin: String, map: &Map<String, Value>) {
        let mut paths = HashSet::new();
        flatten("", map, &mut paths);
        self.layers.push((origin, paths));
    }

    fn add_path(&mut self, origin: String, dotted: &str) {
        let mut paths = HashSet::new();
        let mut prefix = String::new();
        for part in dotted.split('.') {
            if !prefix.is_empty() {
                prefix.push('.');
            }
            prefix.push_str(part);
            paths.insert(prefix.clone());
        }
        self.layers.push((origin, paths));
    }

    /// Some layer set `key` (a value or a table).
    pub fn sets(&self, key: &str) -> bool {
        self.layers.iter().any(|(_, paths)| paths.contains(key))
    }

    /// The layer that set `key` last, or a description when no layer did.
    pub fn of(&self, key: &str) -> String {
        self.layers
            .iter()
            .rev()
            .find(|(_, paths)| paths.contains(key))
            .map(|(origin, _)| origin.clone())
            .unwrap_or_else(|| "no layer (the key is missing)".to_owned())
    }
}

fn flatten(prefix: &str, map: &Map<String, Value>, out: &mut HashSet<String>) {
    for (key, value) in map {
        let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        match &value.kind {
            ValueKind::Table(inner) => flatten(&path, inner, out),
            // Lists of tables (`[[frontends.web.routes]]`) are named by
            // index, `frontends.web.routes[1].sni`, as errors name them.
            ValueKind::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let entry = format!("{path}[{i}]");
                    if let ValueKind::Table(inner) = &item.kind {
                        flatten(&entry, inner, out);
                    }
                    out.insert(entry);
                }
            }
            _ => {}
        }
        out.insert(path);
    }
}
