//! Cluster mode: one `maxconn` per server across several usher instances,
//! coordinated through etcd, with no remote call per connection.
//!
//! Each instance enforces a *share* of every limited server's maxconn, as
//! its Server actor enforces maxconn alone: a session never waits on the
//! store. Shares move through the store, about once a `period`:
//!
//! 1. every instance holds a lease (`lease_ttl`) and publishes, under it,
//!    its demand per server (sessions live and queued);
//! 2. every instance reads the live instances and each server's *holders*
//!    record, and computes the same split of maxconn
//!    ([`allocation::allocate`]: a floor of one each, max-min fair by
//!    demand, spare slots evenly) — no leader;
//! 3. it moves its own entry toward its allocation by compare-and-swap
//!    ([`plan`]): growing only into slots nobody's entry covers, shrinking
//!    only as its sessions end. Entries always cover what each instance
//!    uses and never sum above maxconn, so the server never sees more.
//!
//! An instance cut off from the store keeps its shares while its lease is
//! surely alive (nobody can take its slots before the lease ends), then
//! drops to the fallback; the others keep that fallback free for every
//! holder whose lease is gone ([`keeper`]).
//!
//! [`keeper`] holds one instance's decisions with no I/O (the model tests
//! drive it); the agent and the etcd client run it.

#[cfg(feature = "cluster")]
pub mod agent;
// The protocol's decisions: run by the agent, driven by the model tests.
#[cfg(any(feature = "cluster", feature = "internals"))]
pub mod allocation;
#[cfg(any(feature = "cluster", feature = "internals"))]
pub mod keeper;
#[cfg(any(feature = "cluster", feature = "internals"))]
pub mod plan;
pub mod status;
#[cfg(feature = "cluster")]
mod store;

#[cfg(feature = "cluster")]
pub use agent::ClusterAgent;
pub use status::ClusterStatus;
