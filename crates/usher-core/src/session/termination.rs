//! Termination codes: who ended a session × in which phase, two characters
//! in the spirit of HAProxy's TCP log (`--`, `CQ`, `sQ`, `SC`…).
//!
//! First character, who: `-` nobody (normal end), `C` the client, `c` the
//! client timeout, `S` the server (or no server), `s` a server-side timeout
//! (queue, connect, idle), `P` a policy (a session hook, or the queue
//! discipline shedding under overload), `K` killed at
//! shutdown when `global.grace` ran out, `A` an operator through the admin
//! API, `I` an internal error.
//! Second character, phase: `R` admission, `I` inspection (routing reads
//! the ClientHello), `Q` queue, `C` connect, `D` data, `-` normal end,
//! `S` a per-source cap of the queue, `T` a throttle (a spawned backend
//! whose command keeps failing to start), and `N` *nothing*: the client left before its first byte
//! without having waited in a queue — a port probe or a balancer's TCP
//! health check (`CN`), not a client giving up on a queue (`CQ`). `N`
//! rather than `P`, which already means a policy in the first place.

/// How a session ended. [`Termination::TABLE`] is the documented table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Termination {
    Normal,
    DeniedByPolicy,
    BadProxyHeader,
    /// Routing needed a ClientHello and the client sent none readable (or
    /// reset while sending it) under `no_client_hello = "refuse"`.
    NoClientHello,
    /// Routing needed a ClientHello and `timeout.inspect` expired first
    /// under `no_client_hello = "refuse"`.
    ClientHelloTimeout,
    ClientAbortInQueue,
    /// The client closed or reset having sent nothing and never waited in a
    /// queue, before any data was relayed: a probe, not a queue abort.
    Probe,
    QueueTimeout,
    QueueFull,
    NoServer,
    ClientAbortInConnect,
    ConnectRefused,
    ConnectTimeout,
    ClientAbortInData,
    ClientTimeoutInData,
    ServerAbortInData,
    ServerTimeoutInData,
    KilledInInspect,
    KilledInQueue,
    KilledInConnect,
    KilledInData,
    Internal,
    /// A session hook panicked or failed before the session took a slot.
    HookFailed,
    /// A session hook panicked once the session was connected.
    HookFailedAfterConnect,
    /// Shed by the backend's queue discipline under overload.
    QueueShed,
    /// Refused at once: its client source has its cap of waiters queued.
    SourceQueueFull,
    /// Its client source already had `queue.per_source.max_live` sessions
    /// in the backend.
    SourceLiveFull,
    /// An operator shut down the sessions of its server while it relayed.
    ShutDownInData,
    /// Older than its backend's `timeout.session_max` while it relayed.
    SessionMaxInData,
    /// Refused at once: its spawned backend is throttled after failed starts.
    SpawnThrottled,
}

impl Termination {
    /// Every code, its two characters and what it means (README table).
    pub const TABLE: &'static [(Termination, &'static str, &'static str)] = &[
        (Termination::Normal, "--", "both sides closed normally"),
        (Termination::DeniedByPolicy, "PR", "refused by a session hook before queueing (denied, or it timed out with on_timeout = \"refuse\")"),
        (
            Termination::BadProxyHeader,
            "CR",
            "bad or missing PROXY header (accept_proxy): malformed, timeout.proxy expired, or closed first",
        ),
        (
            Termination::NoClientHello,
            "CI",
            "routing needed a ClientHello and got none readable (plain TCP, malformed, over 16 KiB) with \
             no_client_hello = \"refuse\", or the client reset while sending it",
        ),
        (
            Termination::ClientHelloTimeout,
            "cI",
            "timeout.inspect expired before a complete ClientHello, with no_client_hello = \"refuse\"",
        ),
        (Termination::ClientAbortInQueue, "CQ", "client reset, or closed without sending data, while queued"),
        (
            Termination::Probe,
            "CN",
            "probe: the client closed or reset having sent nothing, never queued, before any data was relayed",
        ),
        (Termination::QueueTimeout, "sQ", "timeout.queue expired while queued; the server never saw it"),
        (Termination::QueueFull, "SQ", "the queue was at its maxqueue: refused at once"),
        (Termination::NoServer, "SC", "no server can take it (server shown as \"-\"), or the last connect was refused"),
        (Termination::ClientAbortInConnect, "CC", "client left while connecting to the server"),
        (Termination::ConnectRefused, "SC", "server refused every connection attempt (retries exhausted)"),
        (Termination::ConnectTimeout, "sC", "timeout.connect expired on the last attempt"),
        (Termination::ClientAbortInData, "CD", "client reset while relaying"),
        (Termination::ClientTimeoutInData, "cD", "timeout.client: client side idle while relaying"),
        (Termination::ServerAbortInData, "SD", "server reset while relaying, or its spawned server process exited"),
        (Termination::ServerTimeoutInData, "sD", "timeout.server: server side idle while relaying"),
        (
            Termination::KilledInInspect,
            "KI",
            "closed at shutdown after global.grace, while its ClientHello was read or a session hook's answer awaited",
        ),
        (Termination::KilledInQueue, "KQ", "closed at shutdown after global.grace, while queued"),
        (Termination::KilledInConnect, "KC", "closed at shutdown after global.grace, while connecting"),
        (Termination::KilledInData, "KD", "closed at shutdown after global.grace, while relaying"),
        (Termination::Internal, "IQ", "internal error: the backend actor is gone"),
        (Termination::HookFailed, "IR", "a session hook panicked or failed (or routed to no such backend) before queueing"),
        (Termination::HookFailedAfterConnect, "IC", "a session hook panicked once connected; nothing was relayed"),
        (
            Termination::QueueShed,
            "PQ",
            "shed while queued: the queue had stood overloaded for a whole queue.codel.interval (codel, \
             adaptive_lifo) and the session had waited twice queue.codel.target or longer; refused at once, the \
             server never saw it",
        ),
        (
            Termination::SourceQueueFull,
            "PS",
            "its client source already had queue.per_source.max_queued sessions waiting in the backend: refused at once",
        ),
        (
            Termination::SourceLiveFull,
            "PL",
            "its client source already had queue.per_source.max_live sessions in the backend (seated, connecting, \
             retrying or waiting): refused at once",
        ),
        (
            Termination::ShutDownInData,
            "AD",
            "closed while relaying: an operator shut down the sessions of its server \
             (POST /backends/{b}/servers/{s}/shutdown-sessions)",
        ),
        (
            Termination::SessionMaxInData,
            "PD",
            "closed while relaying: the session outlived its backend's timeout.session_max (within ±10 %)",
        ),
        (
            Termination::SpawnThrottled,
            "ST",
            "refused at once: its spawned backend is throttled, its command having failed to start \
             spawn.max_start_failures times in a row; it tries again after spawn.throttle_time",
        ),
    ];

    pub fn code(self) -> &'static str {
        Self::TABLE.iter().find(|(t, _, _)| *t == self).map_or("??", |(_, code, _)| code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_two_characters() {
        for (t, code, meaning) in Termination::TABLE {
            assert_eq!(code.len(), 2, "{t:?}");
            assert!(!meaning.is_empty());
            assert_eq!(t.code(), *code);
        }
    }
}
