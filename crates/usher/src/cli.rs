//! Command line: `usher run|check|demo [-c FILE]…`, `usher status`,
//! `usher man`, `usher completions SHELL`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

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
    /// Show frontends, backends and servers from the admin API (GET /stats):
    /// sessions against limits, listener states, queues, server states.
    Status(StatusArgs),
    /// Print the man page usher(1) (roff) on stdout, e.g. `usher man > usher.1`;
    /// with --dir, write it and one page per subcommand (usher-run.1, …) there.
    Man {
        /// Directory to write every page to, such as /usr/local/share/man/man1.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Print the completion script for SHELL on stdout.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Configuration layers to find admin.bind and admin.token in, as `usher
    /// run` reads them (then USHER__* variables); unused with --admin.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Vec<PathBuf>,
    /// The admin API to ask, such as http://127.0.0.1:9900 (default: the
    /// configuration's admin.bind).
    #[arg(long, value_name = "URL")]
    pub admin: Option<String>,
    /// Bearer token of the admin API (default: the configuration's admin.token).
    #[arg(long, env = "USHER_ADMIN_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Refresh every --interval until interrupted (Ctrl-C).
    #[arg(long)]
    pub watch: bool,
    /// Time between refreshes with --watch, such as "1s" or "500ms".
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = interval)]
    pub interval: Duration,
}

/// A `--interval`: a human duration from 100ms to 1 hour.
fn interval(text: &str) -> Result<Duration, String> {
    let expected = "expected a duration from 100ms to 1h such as \"1s\" or \"500ms\"";
    let value = humantime::parse_duration(text.trim()).map_err(|err| format!("{err}; {expected}"))?;
    if value < Duration::from_millis(100) || value > Duration::from_secs(3600) {
        return Err(format!("{text:?} is out of range; {expected}"));
    }
    Ok(value)
}
