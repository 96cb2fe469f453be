//! Everything a program registers by name — session hooks, balancing
//! algorithms, checks of extension actors' options — as one catalog the configuration is checked against (at
//! start, by `usher check`, at every reload).

use crate::backend::balance::{BalancerFactory, BalancerRegistry};
use crate::config::{ExtensionCatalog, OptionProblem};

use super::{ActorOptions, HookRegistry};

/// A program's named extensions.
#[derive(Default, Clone)]
pub struct Registries {
    pub hooks: HookRegistry,
    /// The six built in, and the program's own.
    pub balancers: BalancerRegistry,
    /// Checks of `[actors.NAME]` tables.
    pub actors: ActorOptions,
}

impl Registries {
    /// Registers balancing algorithm `name`, for `backends.NAME.balance`.
    pub fn balancer(&mut self, name: &str, factory: impl BalancerFactory) -> &mut Self {
        self.balancers.register(name, factory);
        self
    }
}

impl ExtensionCatalog for Registries {
    fn hook_names(&self) -> Vec<String> {
        self.hooks.hook_names()
    }

    fn check_hook(&self, name: &str, options: &toml::Table) -> Vec<OptionProblem> {
        self.hooks.check_hook(name, options)
    }

    fn balancer_names(&self) -> Vec<String> {
        self.balancers.names()
    }

    fn check_actors(&self, actors: &toml::Table) -> Vec<(String, OptionProblem)> {
        self.actors.problems(actors)
    }
}
