//! Spawned servers: a backend whose server processes usher starts itself,
//! on demand, with Postfix master's process policy (`backends.X.spawn`).
//!
//! - [`policy`]: the decisions (start, reap, recycle, throttle) as plain
//!   data, driven at random by `tests/spawn_model.rs`;
//! - [`supervisor`]: the actor that carries them out, one per spawned
//!   backend, and reports its processes;
//! - [`process`]: starting one process, its port and its output;
//! - [`hygiene`]: process groups, death with usher, signals.
//!
//! The BackendQueue's side — which slots take sessions — is
//! `backend/spawn_gate.rs`: a slot is an ordinary server whose status the
//! gate bounds, so the core's guarantees hold unchanged.

pub mod hygiene;
pub mod policy;
pub mod process;
pub mod supervisor;

pub use crate::backend::spawn_gate::{GetSpawnReport, SpawnReport};
pub use supervisor::{StressSource, Supervisor, ThrottleFlag};
