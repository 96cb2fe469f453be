//! The option tables of extension actors, `[actors.NAME]`: a program that
//! registers a check (or a serde type) for `NAME` has that table checked
//! at start, by `usher check` and at every reload, exactly as core keys
//! are — errors name the key and the layer, and refuse the configuration
//! as a whole. A table nobody registered stays free-form.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use super::registry::read;
use crate::config::OptionProblem;

/// Checks one actor's options; keys relative to `[actors.NAME]`.
type Check = Arc<dyn Fn(&toml::Table) -> Vec<OptionProblem> + Send + Sync>;

/// The actor option checks a program registers.
#[derive(Default, Clone)]
pub struct ActorOptions {
    checks: BTreeMap<String, Check>,
}

impl ActorOptions {
    /// `[actors.NAME]` is checked by `check` (an absent table as empty).
    pub fn check(&mut self, name: &str, check: impl Fn(&toml::Table) -> Vec<OptionProblem> + Send + Sync + 'static) {
        self.checks.insert(name.to_owned(), Arc::new(check));
    }

    /// `[actors.NAME]` must read as the serde type `C` (an absent table as
    /// empty, so required keys are reported missing).
    pub fn typed<C: DeserializeOwned + 'static>(&mut self, name: &str) {
        self.check(name, |options| read::<C>(options).err().into_iter().collect());
    }

    /// Every problem of every registered table, with its actor's name.
    pub fn problems(&self, actors: &toml::Table) -> Vec<(String, OptionProblem)> {
        let empty = toml::Table::new();
        let mut problems = Vec::new();
        for (name, check) in &self.checks {
            let options = match actors.get(name) {
                Some(toml::Value::Table(table)) => table,
                Some(_) => {
                    let problem = OptionProblem { key: String::new(), problem: "expected a table".to_owned() };
                    problems.push((name.clone(), problem));
                    continue;
                }
                None => {
                    // Said outright: the error's origin can only be the
                    // layer of the nearest table set, the root.
                    let absent = check(&empty).into_iter().map(|p| OptionProblem {
                        problem: format!("{}; no layer has an [actors.{name}] table", p.problem),
                        ..p
                    });
                    problems.extend(absent.map(|p| (name.clone(), p)));
                    continue;
                }
            };
            problems.extend(check(options).into_iter().map(|p| (name.clone(), p)));
        }
        problems
    }
}
