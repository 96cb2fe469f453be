//! Server: the single owner of one server's slot count, health and
//! administrative state.
//!
//! It lends every free slot to its BackendQueue (`Dequeue`) and takes slots
//! back through `Release`, one per slot, sent by the session's [`Slot`] guard
//! on every exit path; each release is lent again at once. It runs the
//! active checks, counts live-traffic connect errors, ramps slowstart, takes
//! admin changes, and tells the BackendQueue what it may do
//! (`ServerStatusChanged`). Balancing decisions stay in the BackendQueue.
//!
//! [`Slot`]: crate::backend::Slot

use std::net::SocketAddr;
use std::time::Duration;

use actix::prelude::*;
use slog::{debug, info, Logger};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

use crate::backend::{AdminState, CheckResult, HealthConfig, OpState, ServerHealth, ServerState, Transition};
use crate::ids::ServerId;
use crate::notify::Notify;
use crate::backend::{ConnectOutcome, Dequeue, Release, ServerStatusChanged};

/// What an active check does.
#[derive(Debug, Clone)]
pub struct CheckSpec {
    pub timeout: Duration,
    /// Written first on every check of a server with `send_proxy` (v1
    /// `UNKNOWN`, v2 `LOCAL`, as HAProxy's checks do), so a server that
    /// insists on the header does not fail its checks; empty = none.
    pub proxy_header: Vec<u8>,
    pub send: Vec<u8>,
    pub expect: Vec<u8>,
}

impl CheckSpec {
    /// A probe of a server whose checks are off: connect (with the PROXY
    /// header it insists on) and nothing else.
    fn connect_only(&self) -> CheckSpec {
        CheckSpec { send: Vec::new(), expect: Vec::new(), ..self.clone() }
    }
}

// === admin messages ===

/// Sets the administrative state: ready, drain or maint.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct SetAdminState(pub AdminState);

/// Sets the weight at run time (0..=256).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct SetWeight(pub u32);

/// Sets maxconn at run time (> 0).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct SetMaxconn(pub u32);

/// Cluster mode: the share of maxconn this instance may use now. Lowered:
/// no grant above it from now on, sessions over it end on their own.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct SetShare(pub u32);

/// A reload changed this server's settings: the configuration wins over
/// run-time changes (admin state back to ready, configured weight and
/// maxconn); its health state and slots carry on.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct ReconfigureServer {
    pub health: HealthConfig,
    pub check: CheckSpec,
}

/// A reload removed this server: no more checks. The actor ends when the
/// last address to it goes (its last session's slot).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct RetireServer;

/// Asks for a [`ServerReport`].
#[derive(Message, Debug)]
#[rtype(result = "ServerReport")]
pub struct GetServerReport;

#[derive(Debug, Clone, MessageResponse)]
pub struct ServerReport {
    pub name: String,
    pub op: OpState,
    pub admin: AdminState,
    pub weight: u32,
    pub maxconn: u32,
    /// Cluster mode: this instance's share of `maxconn`.
    pub share: Option<u32>,
    /// Slots out: lent to the BackendQueue or held by sessions.
    pub slots_out: u32,
    /// Consecutive good and failed checks.
    pub checks: (u32, u32),
    pub last_check: Option<CheckResult>,
    pub since_change: Duration,
}

/// A server's operational state changed: a check passed or failed enough
/// times, a slowstart ramp ended, live traffic failed too often.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerStateChange {
    pub server: String,
    pub from: OpState,
    pub to: OpState,
    /// Why, in the words of the `server state changed` record.
    pub reason: &'static str,
}

pub struct Server {
    id: ServerId,
    name: String,
    address: SocketAddr,
    state: ServerState,
    health: ServerHealth,
    check: CheckSpec,
    last_check: Option<CheckResult>,
    released: u32,
    backend: Recipient<Dequeue>,
    status_to: Recipient<ServerStatusChanged>,
    ramp: Option<SpawnHandle>,
    /// Bumped when checks are rescheduled from scratch (reconfigured,
    /// retired): a check scheduled before does nothing.
    check_epoch: u64,
    retired: bool,
    /// Told of every operational state change, as the log is.
    state_changes: Notify<ServerStateChange>,
    log: Logger,
}

impl Server {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: ServerId,
        name: String,
        address: SocketAddr,
        health: HealthConfig,
        check: CheckSpec,
        backend: Recipient<Dequeue>,
        status_to: Recipient<ServerStatusChanged>,
        log: Logger,
    ) -> Server {
        let maxconn = health.maxconn;
        Server {
            id,
            name,
            address,
            state: ServerState::new(maxconn),
            health: ServerHealth::new(health, Instant::now()),
            check,
            last_check: None,
            released: 0,
            backend,
            status_to,
            ramp: None,
            check_epoch: 0,
            retired: false,
            state_changes: Notify::none(),
            log,
        }
    }

    /// Tells `state_changes` of each operational state change.
    pub fn with_state_changes(mut self, state_changes: Notify<ServerStateChange>) -> Server {
        self.state_changes = state_changes;
        self
    }

    fn lend(&mut self, credits: u32) {
        if credits > 0 || self.released > 0 {
            // Same arbiter, one message per release: bounded by maxconn.
            let released = std::mem::take(&mut self.released);
            self.backend.do_send(Dequeue { server: self.id, credits, released });
        }
    }

    fn report_status(&mut self) {
        let status = self.health.status(Instant::now());
        self.status_to.do_send(ServerStatusChanged { server: self.id, status });
    }

    fn log_transition(&self, t: &Transition) {
        let (good, bad) = self.health.counts();
        info!(self.log, "server state changed";
            "server" => &self.name, "from" => t.from.as_str(), "to" => t.to.as_str(), "reason" => t.reason,
            "good_checks" => good, "failed_checks" => bad, "last_check" => self.last_check.map_or("-", CheckResult::as_str));
        self.state_changes.send(ServerStateChange { server: self.name.clone(), from: t.from, to: t.to, reason: t.reason });
    }

    fn after_transition(&mut self, t: Option<Transition>, ctx: &mut Context<Self>) {
        if let Some(t) = t {
            self.log_transition(&t);
            if t.to == OpState::Starting && self.ramp.is_none() {
                // Step the slowstart ramp every second, as HAProxy does.
                self.ramp = Some(ctx.run_interval(Duration::from_secs(1), |act, ctx| {
                    let done = act.health.tick(Instant::now());
                    act.report_status();
                    if let Some(done) = done {
                        act.log_transition(&done);
                        if let Some(h) = act.ramp.take() {
                            ctx.cancel_future(h);
                        }
                    }
                }));
            }
        }
        self.report_status();
    }

    fn schedule_check(&mut self, ctx: &mut Context<Self>) {
        if !self.health.checking() || self.retired {
            return;
        }
        let epoch = self.check_epoch;
        ctx.run_later(self.health.next_interval(), move |act, ctx| {
            if !act.health.checking() || act.retired || act.check_epoch != epoch {
                return;
            }
            let spec = if act.health.probing() { act.check.connect_only() } else { act.check.clone() };
            let check = tcp_check(act.address, spec);
            ctx.spawn(check.into_actor(act).map(move |result, act, ctx| {
                if act.retired || act.check_epoch != epoch {
                    return;
                }
                let now = Instant::now();
                act.last_check = Some(result);
                debug!(act.log, "check done"; "server" => &act.name, "result" => result.as_str());
                let t = act.health.check_result(result.passed(), now);
                act.after_transition(t, ctx);
                act.schedule_check(ctx);
            }));
        });
    }
}

/// One TCP check: connect, the PROXY header if the server gets one,
/// optionally send, optionally expect a prefix.
async fn tcp_check(address: SocketAddr, spec: CheckSpec) -> CheckResult {
    let run = async {
        let mut stream = TcpStream::connect(address).await.map_err(|_| CheckResult::L4Con)?;
        if !spec.proxy_header.is_empty() {
            stream.write_all(&spec.proxy_header).await.map_err(|_| CheckResult::L4Con)?;
        }
        if !spec.send.is_empty() {
            stream.write_all(&spec.send).await.map_err(|_| CheckResult::L4Con)?;
        }
        if !spec.expect.is_empty() {
            let mut got = vec![0u8; spec.expect.len()];
            stream.read_exact(&mut got).await.map_err(|_| CheckResult::L7Rsp)?;
            if got != spec.expect {
                return Err(CheckResult::L7Rsp);
            }
        }
        Ok(())
    };
    match timeout(spec.timeout, run).await {
        Ok(Ok(())) => CheckResult::L4Ok,
        Ok(Err(failed)) => failed,
        Err(_) => CheckResult::L4Tout,
    }
}

impl Actor for Server {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(crate::MAILBOX_CAPACITY);
        // The BackendQueue learns this server's bounds before its first
        // credit, through the same mailbox: a cap in force from the start
        // (a cluster share of 0 until the cluster grants slots) must hold
        // for the very first grants, not only after its first change.
        self.report_status();
        let credits = self.state.lend_free();
        debug!(self.log, "server slots lent"; "credits" => credits, "maxconn" => self.state.maxconn());
        self.lend(credits);
        self.schedule_check(ctx);
    }
}

impl Handler<Release> for Server {
    type Result = ();

    fn handle(&mut self, _: Release, _: &mut Self::Context) {
        self.released += 1;
        let credits = self.state.release();
        self.lend(credits);
    }
}

impl Handler<ConnectOutcome> for Server {
    type Result = ();

    fn handle(&mut self, msg: ConnectOutcome, ctx: &mut Self::Context) {
        let was_checking = self.health.checking();
        let t = self.health.observe(msg.ok, Instant::now());
        if t.is_some() {
            self.after_transition(t, ctx);
        }
        if !was_checking && self.health.checking() {
            // Taken down by failed connects with checks off: probes start.
            self.schedule_check(ctx);
        }
    }
}

impl Handler<SetAdminState> for Server {
    type Result = ();

    fn handle(&mut self, msg: SetAdminState, ctx: &mut Self::Context) {
        let was_checking = self.health.checking();
        let from = self.health.admin();
        let t = self.health.set_admin(msg.0, Instant::now());
        info!(self.log, "server admin state changed"; "server" => &self.name,
            "from" => from.as_str(), "to" => msg.0.as_str());
        self.after_transition(t, ctx);
        if !was_checking {
            self.schedule_check(ctx);
        }
    }
}

impl Handler<SetWeight> for Server {
    type Result = ();

    fn handle(&mut self, msg: SetWeight, ctx: &mut Self::Context) {
        info!(self.log, "server weight changed"; "server" => &self.name,
            "from" => self.health.weight(), "to" => msg.0);
        self.health.set_weight(msg.0);
        self.after_transition(None, ctx);
    }
}

impl Handler<SetMaxconn> for Server {
    type Result = ();

    fn handle(&mut self, msg: SetMaxconn, ctx: &mut Self::Context) {
        info!(self.log, "server maxconn changed"; "server" => &self.name,
            "from" => self.health.maxconn(), "to" => msg.0);
        self.health.set_maxconn(msg.0);
        // The new bound first, then the slots it frees: the BackendQueue
        // never holds a credit above the limit it knows.
        self.after_transition(None, ctx);
        let credits = self.state.set_maxconn(msg.0);
        self.lend(credits);
    }
}

impl Handler<SetShare> for Server {
    type Result = ();

    fn handle(&mut self, msg: SetShare, ctx: &mut Self::Context) {
        let from = self.health.share();
        self.health.set_share(msg.0);
        if from != self.health.share() {
            debug!(self.log, "server share changed"; "server" => &self.name,
                "from" => from.unwrap_or(0), "to" => msg.0);
            // The BackendQueue learns the bound; the slots were all lent.
            self.after_transition(None, ctx);
        }
    }
}

impl Handler<ReconfigureServer> for Server {
    type Result = ();

    fn handle(&mut self, msg: ReconfigureServer, ctx: &mut Self::Context) {
        info!(self.log, "server reconfigured"; "server" => &self.name,
            "weight" => msg.health.weight, "maxconn" => msg.health.maxconn, "checks" => msg.health.checks);
        let maxconn = msg.health.maxconn;
        let t = self.health.reconfigure(msg.health, Instant::now());
        self.check = msg.check;
        if let Some(h) = self.ramp.take() {
            ctx.cancel_future(h);
        }
        // As SetMaxconn: the new bound first, then the slots it frees.
        self.after_transition(t, ctx);
        if !self.state.unlimited() && maxconn > 0 {
            let credits = self.state.set_maxconn(maxconn);
            self.lend(credits);
        }
        self.check_epoch += 1;
        self.schedule_check(ctx);
    }
}

impl Handler<RetireServer> for Server {
    type Result = ();

    fn handle(&mut self, _: RetireServer, ctx: &mut Self::Context) {
        info!(self.log, "server retired"; "server" => &self.name, "slots_out" => self.state.out());
        self.retired = true;
        self.check_epoch += 1;
        if let Some(h) = self.ramp.take() {
            ctx.cancel_future(h);
        }
    }
}

impl Handler<GetServerReport> for Server {
    type Result = ServerReport;

    fn handle(&mut self, _: GetServerReport, _: &mut Self::Context) -> ServerReport {
        ServerReport {
            name: self.name.clone(),
            op: self.health.op(),
            admin: self.health.admin(),
            weight: self.health.weight(),
            maxconn: self.health.maxconn(),
            share: self.health.share(),
            slots_out: self.state.out(),
            checks: self.health.counts(),
            last_check: self.last_check,
            since_change: Instant::now().saturating_duration_since(self.health.last_change()),
        }
    }
}
