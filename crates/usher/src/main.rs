//! The stock usher daemon: the library's daemon with no extension.

use std::process::ExitCode;

/// Sessions and actor messages allocate at a high rate; see the workspace
/// Cargo.toml for why mimalloc. A program of its own chooses its own.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    usher::daemon::main(usher::daemon::Builder::new())
}
