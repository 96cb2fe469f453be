//! Transparent huge pages are off for the broker's process.
//!
//! With them on, the kernel backs fresh anonymous memory with 2 MiB pages
//! and zeroes each whole at its first touch. The broker's memory grows in
//! steps on the actor thread — a reload that adds servers to a big backend
//! copies some of its per-server tables into fresh memory (those that are
//! not chunked) — and each step then
//! zeroed megabytes in one go: up to 16 ms in which no session moved, on a
//! 2-core VM reloading a backend of 10 000 servers (docs/benchmarks.md,
//! "Huge pages off"). In 4 KiB pages the same growth faults only what it
//! touches, and RSS follows what is used.
//!
//! The switch (`PR_SET_THP_DISABLE`) is the process's and children inherit
//! it across exec: spawned servers clear it again (`spawn/hygiene.rs`).

use slog::{warn, Logger};

/// Turns huge pages off for the whole process; a refusal (a kernel without
/// the switch) is logged and the broker runs on.
pub(super) fn turn_off(log: &Logger) {
    if let Err(err) = rustix::thread::disable_transparent_huge_pages(true) {
        warn!(log, "transparent huge pages stay on"; "error" => err.to_string());
    }
}

#[cfg(test)]
mod tests {
    /// A broker started in this process leaves it without huge pages (the
    /// flag is the process's, so the test reads it back).
    #[test]
    fn the_switch_is_on_after_turning_huge_pages_off() {
        super::turn_off(&slog::Logger::root(slog::Discard, slog::o!()));
        assert!(rustix::thread::transparent_huge_pages_are_disabled().expect("PR_GET_THP_DISABLE"));
    }
}
