//! What an embedder plugs into a broker at start: extension actors, hooks,
//! and where a reload re-reads the configuration from.

use actix::prelude::*;

use crate::backend::balance::BalancerRegistry;
use crate::extension::{CheckClient, HookRegistry, Subscription};

/// Called once with the addresses of the running actors.
pub type OnStart = Box<dyn FnOnce(super::BrokerHandle) + Send>;

/// Called once every listener runs, right after the `started` record (the
/// daemon tells systemd `READY=1` from here).
pub type OnReady = Box<dyn FnOnce() + Send>;

/// Actors plugged into a broker at start.
#[derive(Default)]
pub struct Extensions {
    /// Consulted in order for each new client of every frontend, before
    /// its own hooks; the first denial wins.
    pub admission: Vec<Recipient<CheckClient>>,
    /// Session hooks by name, run by the frontends naming them
    /// (`frontends.NAME.hooks`). A reload loader must check the
    /// configuration against them (`config::load_with`).
    pub hooks: HookRegistry,
    /// Balancing algorithms by name (the six built in, and the
    /// embedder's), for `backends.NAME.balance`. A reload loader must check
    /// the configuration against them too.
    pub balancers: BalancerRegistry,
    /// Told of every ended session of every frontend, each on its own
    /// thread through a bounded mailbox.
    pub observers: Vec<Subscription>,
    /// Receives the actors' addresses once they run (admin API, tests).
    pub on_start: Option<OnStart>,
    /// Fired once the broker is listening.
    pub on_ready: Option<OnReady>,
    /// Re-reads the configuration from where it came from, for `Reload`
    /// (SIGHUP, `POST /reload`). Without it a reload is refused.
    pub reload: Option<super::topology::ConfigLoader>,
}
