//! A daemon with one balancing algorithm, `ewma-connect`: each new session
//! goes to the free server whose connects have been fastest lately (an
//! exponentially weighted moving average of connect times), so a server
//! whose accept queue backs up, or that sits behind a slow link, gets less
//! traffic before it fails. A server with no sample yet is tried first.
//!
//! ```toml
//! [backends.app]
//! balance = "ewma-connect"
//! ```
//!
//! The core still decides: the pick is followed only if that server can
//! take the session now, so the algorithm cannot overfill a server.

use std::net::IpAddr;
use std::process::ExitCode;
use std::time::Duration;

use usher::daemon::Builder;
use usher::extension::{Balancer, BalancerSetup, Candidate, Choice, ServerEvent, ServerId, Servers};

/// Weight of the newest sample.
const ALPHA: f64 = 0.3;

#[derive(Default)]
pub struct EwmaConnect {
    /// Per server id: the average connect time in µs (`None`: no sample).
    ewma_us: Vec<Option<f64>>,
}

impl EwmaConnect {
    pub fn new(setup: &BalancerSetup<'_>) -> EwmaConnect {
        EwmaConnect { ewma_us: vec![None; setup.weights.len()] }
    }

    fn slot(&mut self, server: ServerId) -> &mut Option<f64> {
        if self.ewma_us.len() <= server.0 {
            self.ewma_us.resize(server.0 + 1, None);
        }
        &mut self.ewma_us[server.0]
    }

    /// Unknown servers first (no sample), then the fastest; the least
    /// loaded on a tie. It looks at every candidate (O(n) per pick): fine
    /// for a few dozen servers, and its own cost.
    pub fn choose(&self, candidates: impl IntoIterator<Item = Candidate>) -> Option<Choice> {
        let cost = |c: &Candidate| self.ewma_us.get(c.id.0).copied().flatten().unwrap_or(0.0);
        candidates
            .into_iter()
            .filter(|c| c.available)
            .min_by(|a, b| cost(a).total_cmp(&cost(b)).then(a.load.cmp(&b.load)))
            .map(|c| Choice::Balanced(c.id))
    }

    /// The average connect time of `server`, if it has one.
    pub fn average(&self, server: ServerId) -> Option<Duration> {
        let us = (*self.ewma_us.get(server.0)?)?;
        Some(Duration::from_micros(us as u64))
    }
}

impl Balancer for EwmaConnect {
    fn pick(&mut self, servers: &Servers<'_>, _: Option<IpAddr>) -> Option<Choice> {
        self.choose(servers.iter())
    }

    fn server_changed(&mut self, server: ServerId, event: ServerEvent) {
        // A server that comes back up (or is new) starts afresh.
        if matches!(event, ServerEvent::Added | ServerEvent::Removed | ServerEvent::Changed { up: false, .. }) {
            *self.slot(server) = None;
        }
    }

    fn wants_connect_times(&self) -> bool {
        true
    }

    fn connected(&mut self, server: ServerId, connect_time: Duration) {
        let sample = connect_time.as_secs_f64() * 1e6;
        let slot = self.slot(server);
        *slot = Some(match *slot {
            None => sample,
            Some(avg) => ALPHA * sample + (1.0 - ALPHA) * avg,
        });
    }
}

pub fn builder() -> Builder {
    Builder::new()
        .balancer("ewma-connect", |setup: &BalancerSetup<'_>| Box::new(EwmaConnect::new(setup)) as Box<dyn Balancer>)
}

fn main() -> ExitCode {
    usher::daemon::main(builder())
}
