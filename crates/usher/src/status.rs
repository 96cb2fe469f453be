//! `usher status [--watch]`: the admin API's `GET /stats` as a compact
//! table of frontends, backends and servers, once or every `--interval`
//! until Ctrl-C.

mod admin_client;
mod stats_view;
mod table;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use usher_core::config::{self, ConfigSources};

use crate::cli::StatusArgs;
use admin_client::{AdminTarget, FetchError};

/// Exit status when the admin API cannot be reached or answers oddly
/// (sysexits EX_UNAVAILABLE).
const EXIT_UNAVAILABLE: u8 = 69;
/// Exit status when the admin API refuses the token (sysexits EX_NOPERM).
const EXIT_NOPERM: u8 = 77;
/// Exit status for a bad configuration (sysexits EX_USAGE), as `usher run`.
const EXIT_CONFIG: u8 = 64;

/// Clears a terminal and puts the cursor home, so that each refresh of
/// `--watch` replaces the last one instead of scrolling.
const CLEAR_SCREEN: &str = "\x1b[H\x1b[2J";

pub fn status(args: StatusArgs) -> ExitCode {
    let target = match target(&args) {
        Ok(target) => target,
        Err(code) => return code,
    };
    if !args.watch {
        return match target.stats() {
            Ok(stats) => {
                print(&table::render(&stats, &target.base));
                ExitCode::SUCCESS
            }
            Err(err) => fail(&err),
        };
    }
    watch(&target, args.interval)
}

/// Refreshes until the process is interrupted. A failed refresh is shown
/// in place and the next one tried: a daemon restarting comes back on screen.
fn watch(target: &AdminTarget, interval: Duration) -> ExitCode {
    let terminal = std::io::stdout().is_terminal();
    loop {
        let started = Instant::now();
        let text = match target.stats() {
            Ok(stats) => table::render(&stats, &target.base),
            Err(err) => format!("usher status: {err}\n"),
        };
        if terminal {
            print(&format!("{CLEAR_SCREEN}{text}"));
        } else {
            // Piped: one block per refresh, a blank line between blocks.
            print(&format!("{text}\n"));
        }
        std::thread::sleep(interval.saturating_sub(started.elapsed()));
    }
}

/// Writes through `anstream`, which drops the colours unless stdout is a
/// terminal (and honours `NO_COLOR` / `CLICOLOR_FORCE`).
fn print(text: &str) {
    let mut out = anstream::stdout().lock();
    // A closed pipe (`usher status | head`) is the reader's choice, not an error.
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

fn fail(err: &FetchError) -> ExitCode {
    eprintln!("usher status: {err}");
    ExitCode::from(match err {
        FetchError::Unauthorized { .. } => EXIT_NOPERM,
        FetchError::Unreachable { .. } | FetchError::BadAnswer { .. } => EXIT_UNAVAILABLE,
    })
}

/// `--admin URL` as given; otherwise `admin.bind` and `admin.token` of the
/// configuration layers the daemon reads (defaults, each `-c FILE`,
/// `USHER__*`). `--token` / `USHER_ADMIN_TOKEN` wins over `admin.token`.
fn target(args: &StatusArgs) -> Result<AdminTarget, ExitCode> {
    if let Some(url) = &args.admin {
        return Ok(AdminTarget::from_url(url, args.token.clone()));
    }
    let settings = config::load(&ConfigSources::files(args.config.clone())).map_err(|errors| {
        eprint!("usher status: {errors}");
        ExitCode::from(EXIT_CONFIG)
    })?;
    let Some(bind) = settings.admin.bind else {
        eprintln!(
            "usher status: the admin API is disabled (admin.bind is \"\" in the configuration); \
             pass --admin URL, or set admin.bind"
        );
        return Err(ExitCode::from(EXIT_CONFIG));
    };
    let configured = Some(settings.admin.token).filter(|t| !t.is_empty());
    Ok(AdminTarget::from_bind(bind, args.token.clone().or(configured)))
}
