//! The usher daemon: reads the layered configuration, builds the logger,
//! binds the listeners, runs the broker in an actix System until SIGTERM or
//! SIGINT, reloads on SIGHUP, tells systemd how it goes (`systemd`), and
//! maps failures to exit statuses. Everything else lives in `usher-core`.

mod cli;
mod demo;
mod docs;
mod status;
mod systemd;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use slog::{error, info, warn};
use usher_core::config::{self, ConfigSources};
use usher_core::{BrokerHandle, Extensions, Settings};

use cli::{Cli, Command};

/// Sessions and actor messages allocate at a high rate; see the workspace
/// Cargo.toml for why mimalloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit status for a bad configuration (sysexits EX_USAGE).
const EXIT_CONFIG: u8 = 64;
/// Exit status when the broker cannot start or fails (sysexits EX_SOFTWARE).
const EXIT_FAILURE: u8 = 70;

const DEMO_TOML: &str = include_str!("../../../configs/demo.toml");

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => check(config),
        Command::Status(args) => status::status(args),
        Command::Man { dir } => docs::man(dir.as_deref()),
        Command::Completions { shell } => docs::completions(shell),
        Command::Run { config } => {
            let sources = ConfigSources::files(config);
            match load(sources.clone()) {
                Ok(settings) => run(settings, sources, false),
                Err(code) => code,
            }
        }
        Command::Demo { config } => {
            let mut sources = ConfigSources::files(config);
            sources.inline.push(DEMO_TOML.to_owned());
            match load(sources.clone()) {
                Ok(settings) => run(settings, sources, true),
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

fn run(settings: Settings, sources: ConfigSources, with_demo: bool) -> ExitCode {
    let (log, _guard) = usher_core::logger(&settings.log);
    let notifier = Arc::new(systemd::Notifier::from_env(log.clone()));
    let listeners = match usher_core::bind_all(&settings) {
        Ok(listeners) => listeners,
        Err(err) => {
            error!(log, "cannot start"; "error" => format!("{err:#}"));
            notifier.status("cannot start: a listening address could not be bound");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let serving = format!(
        "serving {} frontends on {} listeners",
        settings.frontends.len(),
        listeners.0.values().map(Vec::len).sum::<usize>()
    );
    let ready = notifier.clone();
    let (started, broker) = tokio::sync::oneshot::channel();
    let extensions = Extensions {
        on_start: Some(Box::new(move |handle: BrokerHandle| {
            let _ = started.send(handle);
        })),
        on_ready: Some(Box::new(move || ready.ready(&serving))),
        // A reload re-reads the very layers the daemon started from.
        reload: Some(Box::new(move || config::load(&sources))),
        ..Extensions::default()
    };
    let grace = settings.global.grace;
    let system = actix_rt::System::new();
    let result = system.block_on(async {
        if with_demo {
            start_demo_servers(&settings, &log).await?;
        }
        let stop = signals(log.clone(), notifier.clone(), grace, broker);
        usher_core::run(settings, listeners, log.clone(), extensions, stop).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            error!(log, "broker failed"; "error" => format!("{err:#}"));
            notifier.status("broker failed");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Resolves on the first SIGTERM or SIGINT, after telling systemd
/// `STOPPING=1`. Each SIGHUP (systemd's `ExecReload`) reloads the
/// configuration, between `RELOADING=1` and `READY=1`; a rejected reload
/// leaves the running configuration and says so in the status line.
async fn signals(
    log: slog::Logger,
    notifier: Arc<systemd::Notifier>,
    grace: std::time::Duration,
    broker: tokio::sync::oneshot::Receiver<BrokerHandle>,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut int, mut hup) =
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::hangup())) {
            (Ok(term), Ok(int), Ok(hup)) => (term, int, hup),
            _ => {
                error!(log, "cannot install signal handlers; stop with SIGKILL");
                return std::future::pending().await;
            }
        };
    let mut broker = Some(broker);
    let mut running: Option<BrokerHandle> = None;
    let name = loop {
        tokio::select! {
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            _ = hup.recv() => {
                info!(log, "signal received"; "signal" => "SIGHUP");
                if running.is_none() {
                    // Started by now: SIGHUP arrives after READY.
                    running = match broker.take() {
                        Some(rx) => rx.await.ok(),
                        None => None,
                    };
                }
                let Some(handle) = &running else {
                    warn!(log, "reload impossible: the broker is not running");
                    continue;
                };
                notifier.reloading("reloading the configuration");
                // The Topology logs the outcome and every change.
                let status = match handle.reload().await {
                    Ok(summary) => format!("reloaded: {} changes", summary.changes.len()),
                    Err(err) => format!("reload rejected, configuration unchanged: {}", first_line(&err.to_string())),
                };
                notifier.ready(&status);
            }
        }
    };
    info!(log, "signal received"; "signal" => name);
    notifier.stopping(&format!("stopping: sessions may finish for up to {grace:?}"));
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
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
