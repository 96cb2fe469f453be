//! usher-core: everything of the usher broker that can be tested.
//!
//! Start with [`broker::run`]. The folders say where things live:
//! `config/` (layers → validation → settings), `bookkeeping/` (plain
//! structs that decide; no actix), `actors/` (thin actor shells over them),
//! `balance/` (algorithms), `data_plane/` (accept, sessions, relay),
//! `logging/` (logger, access record, termination codes).

#![forbid(unsafe_code)]

pub mod actors;
pub mod admin;
pub mod balance;
pub mod bookkeeping;
pub mod broker;
pub mod config;
pub mod data_plane;
pub mod extension;
pub mod fd_budget;
pub mod ids;
pub mod logging;
pub mod messages;
pub mod net;
pub mod reload;

pub use broker::{bind_all, run, BoundListeners};
pub use config::Settings;
pub use extension::{CheckClient, Extensions, Verdict};
