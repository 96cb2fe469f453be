//! Command line: `usher run|check|demo [-c FILE]…`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "usher", version, about = "An actor-model TCP connection broker")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the broker on the built-in defaults, then each -c FILE in order,
    /// then USHER__SECTION__KEY environment variables.
    Run {
        /// A TOML configuration layer; repeat to layer several files.
        #[arg(short = 'c', long = "config", value_name = "FILE")]
        config: Vec<PathBuf>,
    },
    /// Validate the configuration and print the effective result (exit status
    /// 64 and every problem found when it is invalid).
    Check {
        #[arg(short = 'c', long = "config", value_name = "FILE")]
        config: Vec<PathBuf>,
    },
    /// Start usher on configs/demo.toml with built-in slow demo servers.
    Demo {
        /// Extra layers on top of the demo configuration (e.g. other ports).
        #[arg(short = 'c', long = "config", value_name = "FILE")]
        config: Vec<PathBuf>,
    },
}
