//! What the cluster agent publishes for the admin API: a snapshot it
//! replaces after every round (a watch channel: the agent writes, readers
//! copy; no broker state is behind it).

use serde::Serialize;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ClusterStatus {
    /// This instance's name.
    pub name: String,
    /// Live instances in the last reading of the store (this one included).
    pub members: usize,
    /// The lease is surely alive: shares are the cluster's, not the fallback.
    pub in_lease: bool,
    /// Rounds that could not reach the store, since start.
    pub store_errors: u64,
}
