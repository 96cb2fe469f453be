//! usher-bench: usher side by side with HAProxy, nginx and with no proxy at all.
//! `cargo run --release -p usher-bench -- all`.
//!
//! - [`cases`]: the cases and the harness (placement, alternation, repeats).
//! - [`proxies`]: starting usher (`serve-usher` child), HAProxy and nginx, pinned.
//! - [`layout`]: the frontends and backends a proxy is configured with.
//! - [`in_process`]: usher on a thread of the bench process, for its handle.
//! - [`master_worker`]: HAProxy in master-worker mode, reloaded by `SIGUSR2`.
//! - [`nginx`]: finding nginx's stream module and writing its configuration.
//! - [`backends`]: built-in tokio backends that count their peak concurrency.
//! - [`load`]: the load generator and its latency histograms.
//! - [`report`], [`targets`]: tables and the targets.
//! - [`stats_poller`]: `GET /stats` once a second, as an open dashboard does.
//! - [`strace`]: counting a proxy's system calls with `strace -c`.
//! - [`sys`]: taskset, RLIMIT_NOFILE, /proc readings.
//! - [`tls_hello`]: the ClientHello the `routing` case's clients send.

pub mod backends;
pub mod cases;
pub mod in_process;
pub mod layout;
pub mod load;
pub mod master_worker;
pub mod nginx;
pub mod proxies;
pub mod report;
pub mod stats_poller;
pub mod strace;
pub mod sys;
pub mod targets;
pub mod tls_hello;

pub use cases::{Case, Harness, Options};
