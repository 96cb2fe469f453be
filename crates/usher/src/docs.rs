//! `usher man` and `usher completions SHELL`: generated from the clap
//! definitions in `cli.rs`, so they never drift from the command line.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use clap::CommandFactory;

use crate::cli::Cli;

/// The man page, roff, on stdout; with `dir`, every page (usher.1 and the
/// usher-SUBCOMMAND.1 pages its SUBCOMMANDS section refers to) in `dir`.
pub fn man(dir: Option<&Path>) -> ExitCode {
    if let Some(dir) = dir {
        return match clap_mangen::generate_to(Cli::command(), dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("usher man: cannot write the man pages to {}: {err}", dir.display());
                ExitCode::FAILURE
            }
        };
    }
    let mut page = Vec::new();
    if let Err(err) = clap_mangen::Man::new(Cli::command()).render(&mut page) {
        eprintln!("usher man: cannot render the man page: {err}");
        return ExitCode::FAILURE;
    }
    write_stdout(&page)
}

/// The completion script for `shell`, on stdout.
pub fn completions(shell: clap_complete::Shell) -> ExitCode {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "usher", &mut script);
    write_stdout(&script)
}

fn write_stdout(bytes: &[u8]) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("usher: cannot write to stdout: {err}");
            ExitCode::FAILURE
        }
    }
}
