//! The usher daemon as a library: [`daemon::main`] is the whole command
//! line (`run`, `check`, `demo`, `status`, `man`, `completions`) with its
//! signals, reloads, systemd notification and exit codes, so that a program
//! with its own extensions is a [`daemon::Builder`] and one call. The stock
//! `usher` binary is that call with no extension.

pub mod daemon;

mod cli;
mod demo;
mod docs;
mod status;
mod systemd;

pub use usher_core::extension;
pub use usher_core::SessionHook;
