//! Session hooks registered by name, as Envoy registers filter factories:
//! each name comes with a check of its `[hooks.NAME]` options (so that
//! `usher check` and a reload report them like core keys) and a way to
//! build the hook from them at start and at every reload.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::config::{ExtensionCatalog, HookSettings, OptionProblem};
use crate::session::{ConfiguredHook, HookCounters, HookCountersReport, SessionHook};

/// Builds one named hook from its checked options.
pub trait HookFactory: Send + Sync + 'static {
    /// Every problem of `options`, keys relative to `[hooks.NAME]`.
    fn check(&self, options: &toml::Table) -> Vec<OptionProblem>;
    /// The hook, from options `check` accepted.
    fn build(&self, options: &toml::Table) -> Arc<dyn SessionHook>;
}

/// The hooks a program registers.
#[derive(Default, Clone)]
pub struct HookRegistry {
    entries: BTreeMap<String, Entry>,
}

#[derive(Clone)]
struct Entry {
    factory: Arc<dyn HookFactory>,
    /// Kept across reloads: `/stats` counts a hook over the process' life.
    counters: Arc<HookCounters>,
}

impl HookRegistry {
    /// Registers `factory` as `name`.
    pub fn register(&mut self, name: &str, factory: impl HookFactory) -> &mut Self {
        let entry = Entry { factory: Arc::new(factory), counters: Arc::default() };
        self.entries.insert(name.to_owned(), entry);
        self
    }

    /// Registers a hook without options: any key in `[hooks.NAME]` beyond
    /// the core's is an error.
    pub fn hook(&mut self, name: &str, hook: impl SessionHook) -> &mut Self {
        self.register(name, Fixed(Arc::new(hook)))
    }

    /// Registers a hook built from options read as the serde type `C`.
    pub fn hook_with<C, H>(&mut self, name: &str, build: impl Fn(C) -> H + Send + Sync + 'static) -> &mut Self
    where
        C: DeserializeOwned + 'static,
        H: SessionHook,
    {
        let build = move |options: C| Arc::new(build(options)) as Arc<dyn SessionHook>;
        self.register(name, Typed { build, options: PhantomData })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The hooks a frontend names, built from their checked options.
    /// Names the configuration check let through are registered.
    pub(crate) fn configure(&self, names: &[String], settings: &BTreeMap<String, HookSettings>) -> Vec<ConfiguredHook> {
        names
            .iter()
            .filter_map(|name| {
                let entry = self.entries.get(name)?;
                let terms = settings.get(name)?;
                Some(ConfiguredHook {
                    name: Arc::from(name.as_str()),
                    hook: entry.factory.build(&terms.options),
                    timeout: terms.timeout,
                    on_timeout: terms.on_timeout,
                    counters: entry.counters.clone(),
                })
            })
            .collect()
    }

    /// Each hook's counters, for `/stats`.
    pub fn counters(&self) -> BTreeMap<String, HookCountersReport> {
        self.entries.iter().map(|(name, entry)| (name.clone(), entry.counters.read())).collect()
    }
}

impl ExtensionCatalog for HookRegistry {
    fn hook_names(&self) -> Vec<String> {
        self.entries.keys().cloned().collect()
    }

    fn check_hook(&self, name: &str, options: &toml::Table) -> Vec<OptionProblem> {
        self.entries.get(name).map(|entry| entry.factory.check(options)).unwrap_or_default()
    }
}

/// A hook without options.
struct Fixed(Arc<dyn SessionHook>);

impl HookFactory for Fixed {
    fn check(&self, options: &toml::Table) -> Vec<OptionProblem> {
        options
            .keys()
            .map(|key| OptionProblem {
                key: key.clone(),
                problem: "unknown key; this hook takes only timeout and on_timeout".to_owned(),
            })
            .collect()
    }

    fn build(&self, _: &toml::Table) -> Arc<dyn SessionHook> {
        self.0.clone()
    }
}

/// A hook built from options of a serde type.
struct Typed<C, F> {
    build: F,
    options: PhantomData<fn() -> C>,
}

impl<C, F> HookFactory for Typed<C, F>
where
    C: DeserializeOwned + 'static,
    F: Fn(C) -> Arc<dyn SessionHook> + Send + Sync + 'static,
{
    fn check(&self, options: &toml::Table) -> Vec<OptionProblem> {
        match read::<C>(options) {
            Ok(_) => Vec::new(),
            Err(problem) => vec![problem],
        }
    }

    fn build(&self, options: &toml::Table) -> Arc<dyn SessionHook> {
        match read::<C>(options) {
            Ok(options) => (self.build)(options),
            // `check` accepted these very options before the broker used them.
            Err(_) => Arc::new(Unconfigured),
        }
    }
}

/// Stands for a hook whose options failed after all; it passes every session.
struct Unconfigured;

impl SessionHook for Unconfigured {}

/// Reads an extension's checked options as the serde type `C` (the same
/// reading the configuration check did).
pub fn read_options<C: DeserializeOwned>(options: &toml::Table) -> Result<C, OptionProblem> {
    read(options)
}

/// Reads `options` as `C`. The options are read back from their TOML text
/// so that the problem's span names the key it is about.
pub(super) fn read<C: DeserializeOwned>(options: &toml::Table) -> Result<C, OptionProblem> {
    let text = toml::to_string(options).unwrap_or_default();
    toml::from_str::<C>(&text).map_err(|err| {
        let key = err.span().map(|span| key_at(&text, span.start)).unwrap_or_default();
        OptionProblem { key, problem: err.message().to_owned() }
    })
}

/// The dotted key of the `key = value` line holding byte `at` of `text`
/// (under its `[table]` header, if any); empty when there is none.
fn key_at(text: &str, at: usize) -> String {
    let mut table = String::new();
    let mut start = 0;
    for line in text.split_inclusive('\n') {
        let end = start + line.len();
        let trimmed = line.trim();
        if let Some(header) = trimmed.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            table = header.trim_matches(['[', ']']).to_owned();
        } else if (start..end).contains(&at) {
            let key = trimmed.split('=').next().unwrap_or_default().trim().trim_matches('"');
            return if table.is_empty() { key.to_owned() } else { format!("{table}.{key}") };
        }
        start = end;
    }
    String::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Options {
        cidrs: Vec<String>,
        class: i32,
    }

    #[test]
    fn a_typed_option_of_the_wrong_type_is_named_by_its_key() {
        let options: toml::Table = toml::from_str("cidrs = [\"10.0.0.0/8\"]\nclass = \"high\"\n").expect("toml");
        let problem = read::<Options>(&options).expect_err("rejected");
        assert_eq!(problem.key, "class", "{problem:?}");
    }

    #[test]
    fn a_missing_typed_option_is_reported() {
        let options: toml::Table = toml::from_str("class = 1\n").expect("toml");
        let problem = read::<Options>(&options).expect_err("rejected");
        assert!(problem.problem.contains("cidrs"), "{problem:?}");
    }
}
