//! The usher daemon as a library entry point: reads the layered
//! configuration (checked against the program's extensions), builds the
//! logger, binds the listeners, runs the broker in an actix System until
//! SIGTERM or SIGINT, reloads on SIGHUP and `POST /reload`, tells systemd
//! how it goes, and maps failures to exit statuses. A program with its own
//! extensions is a [`Builder`] given to [`main`]:
//!
//! ```no_run
//! use std::process::ExitCode;
//!
//! struct Audit;
//! impl usher::SessionHook for Audit {}
//!
//! fn main() -> ExitCode {
//!     usher::daemon::main(usher::daemon::Builder::new().hook("audit", Audit))
//! }
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use actix::Recipient;
use clap::Parser;
use serde::de::DeserializeOwned;
use slog::{error, info, warn};
use usher_core::config::{self, ConfigSources};
use usher_core::extension::{read_options, BalancerFactory, CheckClient, Observed, Observer, Registries, Subscription};
use usher_core::{BrokerHandle, Extensions, SessionHook, Settings};

use crate::cli::{Cli, Command};
use crate::{demo, docs, status, systemd};

/// Exit status for a bad configuration (sysexits EX_USAGE).
pub const EXIT_CONFIG: u8 = 64;
/// Exit status when the broker cannot start or fails (sysexits EX_SOFTWARE).
pub const EXIT_FAILURE: u8 = 70;

/// The extensions a daemon program registers by name; its configuration
/// may name them and is checked against them.
#[derive(Default)]
pub struct Builder {
    registries: Registries,
    observers: Vec<Subscription>,
    /// Actors to start inside the actix System, once the settings are read.
    actors: Vec<StartActor>,
}

/// Starts one extension actor from the checked settings (inside the System).
type StartActor = Box<dyn FnOnce(&Settings, &mut Extensions)>;

impl Builder {
    /// The stock daemon: no extension.
    pub fn new() -> Builder {
        Builder::default()
    }

    /// A session hook without options, for `frontends.NAME.hooks = [name]`.
    pub fn hook(mut self, name: &str, hook: impl SessionHook) -> Builder {
        self.registries.hooks.hook(name, hook);
        self
    }

    /// A session hook built from its `[hooks.NAME]` options, read as `C`
    /// (checked by `usher check` and every reload, like core keys).
    pub fn hook_with<C: DeserializeOwned + 'static, H: SessionHook>(
        mut self,
        name: &str,
        build: impl Fn(C) -> H + Send + Sync + 'static,
    ) -> Builder {
        self.registries.hooks.hook_with(name, build);
        self
    }

    /// A balancing algorithm, for `backends.NAME.balance = name`: `build`
    /// makes one balancer per backend (and per reload that changes the
    /// backend's servers or balancing keys).
    pub fn balancer(mut self, name: &str, build: impl BalancerFactory) -> Builder {
        self.registries.balancer(name, build);
        self
    }

    /// Checks `[actors.NAME]` as the serde type `C`, like core keys, for an
    /// extension actor that reads its options there.
    pub fn actor_options<C: DeserializeOwned + 'static>(mut self, name: &str) -> Builder {
        self.registries.actors.typed::<C>(name);
        self
    }

    /// An admission actor, run first on every frontend for each new client
    /// (`Allow` or `Deny`), started from its `[actors.NAME]` options read as
    /// `C` (checked like core keys; an absent table reads as empty). It
    /// starts inside the daemon's actix System, after the configuration
    /// was checked.
    pub fn admission_actor<C: DeserializeOwned + 'static>(
        mut self,
        name: &str,
        start: impl FnOnce(C) -> Recipient<CheckClient> + 'static,
    ) -> Builder {
        self.registries.actors.typed::<C>(name);
        let name = name.to_owned();
        self.actors.push(Box::new(move |settings, extensions| {
            let options = settings.actors.get(&name).and_then(|v| v.as_table()).cloned().unwrap_or_default();
            // The configuration check read these very options as `C`.
            if let Ok(options) = read_options::<C>(&options) {
                extensions.admission.push(start(options));
            }
        }));
        self
    }

    /// An observer actor: every event reaches it as an [`Observed`]
    /// message, through its own bounded mailbox (a full one loses the
    /// event, counted in `/stats`). `start` runs inside the daemon's actix
    /// System.
    pub fn observer_actor(mut self, name: &str, start: impl FnOnce() -> Recipient<Observed> + 'static) -> Builder {
        let name = name.to_owned();
        self.actors.push(Box::new(move |_, extensions| {
            extensions.observers.push(Subscription::actor(&name, start()));
        }));
        self
    }

    /// Loads and checks the configuration layers `sources` against these
    /// extensions, as `check`, `run` and every reload do.
    pub fn load(&self, sources: &ConfigSources) -> Result<Settings, config::ConfigErrors> {
        config::load_with(sources, &self.registries)
    }

    /// An observer of every ended session, on its own thread.
    pub fn observer(mut self, name: &str, observer: impl Observer) -> Builder {
        self.observers.push(Subscription::new(name, observer));
        self
    }
}

const DEMO_TOML: &str = include_str!("../../../configs/demo.toml");

/// Runs the daemon's command line with `builder`'s extensions; returns the
/// process' exit status.
pub fn main(builder: Builder) -> ExitCode {
    let cli = Cli::parse();
    let hooks = Arc::new(builder.registries);
    let observers = builder.observers;
    let actors = builder.actors;
    match cli.command {
        Command::Check { config } => check(config, &hooks),
        Command::Status(args) => status::status(args),
        Command::Man { dir } => docs::man(dir.as_deref()),
        Command::Completions { shell } => docs::completions(shell),
        Command::Run { config } => {
            let sources = ConfigSources::files(config);
            match load(sources.clone(), &hooks) {
                Ok(settings) => run(settings, sources, hooks, (observers, actors), false),
                Err(code) => code,
            }
        }
        Command::Demo { config } => {
            let mut sources = ConfigSources::files(config);
            sources.inline.push(DEMO_TOML.to_owned());
            match load(sources.clone(), &hooks) {
                Ok(settings) => run(settings, sources, hooks, (observers, actors), true),
                Err(code) => code,
            }
        }
    }
}

fn load(sources: ConfigSources, hooks: &Registries) -> Result<Settings, ExitCode> {
    config::load_with(&sources, hooks).map_err(|errors| {
        eprint!("usher: {errors}");
        ExitCode::from(EXIT_CONFIG)
    })
}

fn check(files: Vec<PathBuf>, hooks: &Registries) -> ExitCode {
    match load(ConfigSources::files(files), hooks) {
        Ok(settings) => {
            print!("{}", settings.to_toml());
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn run(
    settings: Settings,
    sources: ConfigSources,
    hooks: Arc<Registries>,
    (observers, actors): (Vec<Subscription>, Vec<StartActor>),
    with_demo: bool,
) -> ExitCode {
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
    let mut extensions = Extensions {
        on_start: Some(Box::new(move |handle: BrokerHandle| {
            let _ = started.send(handle);
        })),
        on_ready: Some(Box::new(move || ready.ready(&serving))),
        // A reload re-reads the very layers the daemon started from, and
        // checks them against the same extensions.
        reload: Some(Box::new({
            let hooks = hooks.clone();
            move || config::load_with(&sources, &*hooks)
        })),
        hooks: hooks.hooks.clone(),
        balancers: hooks.balancers.clone(),
        observers,
        ..Extensions::default()
    };
    let grace = settings.global.grace;
    let system = actix_rt::System::new();
    let result = system.block_on(async {
        if with_demo {
            start_demo_servers(&settings, &log).await?;
        }
        for start in actors {
            start(&settings, &mut extensions);
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
