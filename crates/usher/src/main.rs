//! The usher daemon: reads the layered configuration, builds the logger,
//! binds the listeners, runs the broker in an actix System until SIGTERM or
//! SIGINT, and maps failures to exit statuses. Everything else lives in
//! `usher-core`.

mod cli;
mod demo;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use slog::{error, info};
use usher_core::config::{self, ConfigSources};
use usher_core::{Extensions, Settings};

use cli::{Cli, Command};

/// Exit status for a bad configuration (sysexits EX_USAGE).
const EXIT_CONFIG: u8 = 64;
/// Exit status when the broker cannot start or fails (sysexits EX_SOFTWARE).
const EXIT_FAILURE: u8 = 70;

const DEMO_TOML: &str = include_str!("../../../configs/demo.toml");

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => check(config),
        Command::Run { config } => match load(ConfigSources::files(config)) {
            Ok(settings) => run(settings, false),
            Err(code) => code,
        },
        Command::Demo { config } => {
            let mut sources = ConfigSources::files(config);
            sources.inline.push(DEMO_TOML.to_owned());
            match load(sources) {
                Ok(settings) => run(settings, true),
                Err(code) => code,
            }
        }
    }
}

fn load(sources: ConfigSources) -> Result<Settings, ExitCode> {
    config::load(&sources).map_err(|errors| {
        eprint!("usher: {errors}");
        ExitCode::from(EXIT_CONFIG)
    })
}

fn check(files: Vec<PathBuf>) -> ExitCode {
    match load(ConfigSources::files(files)) {
        Ok(settings) => {
            print!("{}", settings.to_toml());
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn run(settings: Settings, with_demo: bool) -> ExitCode {
    let (log, _guard) = usher_core::logging::logger(&settings.log);
    let listeners = match usher_core::bind_all(&settings) {
        Ok(listeners) => listeners,
        Err(err) => {
            error!(log, "cannot start"; "error" => format!("{err:#}"));
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let system = actix_rt::System::new();
    let result = system.block_on(async {
        if with_demo {
            start_demo_servers(&settings, &log).await?;
        }
        usher_core::run(settings, listeners, log.clone(), Extensions::default(), stop_signal(log.clone())).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            error!(log, "broker failed"; "error" => format!("{err:#}"));
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Resolves on the first SIGTERM or SIGINT.
async fn stop_signal(log: slog::Logger) {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut int) = match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(term), Ok(int)) => (term, int),
        _ => {
            error!(log, "cannot install signal handlers; stop with SIGKILL");
            return std::future::pending().await;
        }
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    info!(log, "signal received"; "signal" => name);
}

async fn start_demo_servers(settings: &Settings, log: &slog::Logger) -> anyhow::Result<()> {
    for backend in &settings.backends {
        for server in &backend.servers {
            let listener = tokio::net::TcpListener::bind(server.address).await.map_err(|err| {
                anyhow::anyhow!("demo server {} cannot listen on {}: {err}", server.name, server.address)
            })?;
            info!(log, "demo server listening"; "server" => server.name.clone(), "address" => %server.address);
            actix_rt::spawn(demo::serve(server.name.clone(), listener));
        }
    }
    if let Some(addr) = settings.frontends.first().and_then(|f| f.bind.first()) {
        eprintln!("{}", demo::instructions(*addr));
    }
    Ok(())
}
