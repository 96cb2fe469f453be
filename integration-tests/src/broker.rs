//! A broker under test, in its own thread and actix System.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::thread::JoinHandle;

use tokio::sync::oneshot;
use usher_core::broker::Actors;
use usher_core::BrokerHandle;
use usher_core::{BoundListeners, Extensions, Settings};
use usher_core::{ReloadError, ReloadSummary};

use crate::logs::LogCapture;

pub struct TestBroker {
    pub addrs: HashMap<String, Vec<SocketAddr>>,
    pub logs: LogCapture,
    /// Reloads, run-time changes and reports, as an embedder has them.
    pub handle: BrokerHandle,
    /// The running actors, for white-box tests (refreshed by [`TestBroker::reload`]).
    pub control: Actors,
    /// The admin API's address, when started with [`TestBroker::start_with_admin`].
    pub admin_addr: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestBroker {
    /// Starts a broker on `toml` (over the built-in defaults) with one fresh
    /// 127.0.0.1:0 listener per frontend.
    pub fn start(toml: &str) -> TestBroker {
        Self::start_with(toml, |_| Extensions::default())
    }

    /// Same, with the admin API on a fresh 127.0.0.1:0 listener
    /// (`admin_addr`); `[admin] token` applies, `admin.bind` does not.
    pub fn start_with_admin(toml: &str) -> TestBroker {
        Self::launch(toml, |_| Extensions::default(), true)
    }

    /// Same, with extension actors built inside the broker's System.
    pub fn start_with(toml: &str, extensions: impl FnOnce(&Settings) -> Extensions + Send + 'static) -> TestBroker {
        Self::launch(toml, extensions, false)
    }

    /// Starts with the session hooks `hooks` registered: the configuration
    /// is checked against them, as `usher::daemon` checks it.
    pub fn start_with_hooks(toml: &str, hooks: usher_core::HookRegistry) -> TestBroker {
        let sources = usher_core::config::ConfigSources::inline(toml);
        let settings =
            usher_core::config::load_with(&sources, &hooks).unwrap_or_else(|err| panic!("test config: {err}"));
        Self::launch_settings(settings, move |_| Extensions { hooks, ..Extensions::default() }, false)
    }

    /// Starts a broker on `settings` as given, validation bypassed (as an
    /// embedder that builds them in code may), with one fresh 127.0.0.1:0
    /// listener per frontend.
    pub fn start_settings(settings: Settings) -> TestBroker {
        Self::launch_settings(settings, |_| Extensions::default(), false)
    }

    /// Starts on the configuration file `path` (over the built-in defaults),
    /// which every reload reads again, as the daemon does; with the admin
    /// API when `admin`.
    pub fn start_reloadable(path: &std::path::Path, admin: bool) -> TestBroker {
        let toml = std::fs::read_to_string(path).expect("read the test config");
        let path = path.to_owned();
        Self::launch(
            &toml,
            move |_| Extensions {
                reload: Some(Box::new(move || {
                    usher_core::config::load(&usher_core::config::ConfigSources::files(vec![path.clone()]))
                })),
                ..Extensions::default()
            },
            admin,
        )
    }

    /// Starts on the configuration file `path` with the extensions in
    /// `registries` (session hooks, balancing algorithms): the file is
    /// checked against them at start and at every reload, as
    /// `usher::daemon` checks it; with the admin API when `admin`.
    pub fn start_with_registries(
        path: &std::path::Path,
        registries: usher_core::extension::Registries,
        admin: bool,
    ) -> TestBroker {
        let sources = usher_core::config::ConfigSources::files(vec![path.to_owned()]);
        let settings =
            usher_core::config::load_with(&sources, &registries).unwrap_or_else(|err| panic!("test config: {err}"));
        let extensions = move |_: &Settings| Extensions {
            hooks: registries.hooks.clone(),
            balancers: registries.balancers.clone(),
            reload: Some(Box::new(move || usher_core::config::load_with(&sources, &registries))),
            ..Extensions::default()
        };
        Self::launch_settings(settings, extensions, admin)
    }

    /// Reloads the configuration (as SIGHUP does) and refreshes `control`.
    pub async fn reload(&mut self) -> Result<ReloadSummary, ReloadError> {
        let result = self.handle.reload().await;
        self.handle = self.handle.refreshed().await.expect("the broker answers");
        self.control = self.handle.actors().await.expect("the broker answers");
        result
    }

    fn launch(
        toml: &str,
        extensions: impl FnOnce(&Settings) -> Extensions + Send + 'static,
        admin: bool,
    ) -> TestBroker {
        let settings = usher_core::config::from_toml_str(toml).unwrap_or_else(|err| panic!("test config: {err}"));
        Self::launch_settings(settings, extensions, admin)
    }

    fn launch_settings(
        settings: Settings,
        extensions: impl FnOnce(&Settings) -> Extensions + Send + 'static,
        admin: bool,
    ) -> TestBroker {
        let mut listeners = BoundListeners::default();
        let mut addrs: HashMap<String, Vec<SocketAddr>> = HashMap::new();
        for f in &settings.frontends {
            let l = crate::listener();
            addrs.entry(f.name.clone()).or_default().push(l.local_addr().expect("addr"));
            listeners.insert(&f.name, l);
        }
        let admin_addr = admin.then(|| {
            let l = crate::listener();
            let addr = l.local_addr().expect("addr");
            listeners.set_admin(l);
            addr
        });
        let logs = LogCapture::new();
        let log = logs.logger();
        let (stop, stopped) = oneshot::channel::<()>();
        let (started, control) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let system = actix_rt::System::new();
            system.block_on(async move {
                let mut ext = extensions(&settings);
                ext.on_start = Some(Box::new(move |handle: BrokerHandle| {
                    actix_rt::spawn(async move {
                        let actors = handle.actors().await.expect("the broker answers");
                        let _ = started.send((handle, actors));
                    });
                }));
                usher_core::run(settings, listeners, log, ext, async {
                    let _ = stopped.await;
                })
                .await
            })
        });
        let (handle, control) = control.recv_timeout(crate::DEADLINE).expect("the broker started its actors");
        TestBroker { addrs, logs, handle, control, admin_addr, stop: Some(stop), thread: Some(thread) }
    }

    /// The first listening address of `frontend`.
    pub fn addr(&self, frontend: &str) -> SocketAddr {
        self.addrs[frontend][0]
    }

    /// Graceful stop: stop accepting, let sessions finish for the grace.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.stop.take().map(|s| s.send(()));
        let thread = self.thread.take().expect("running");
        tokio::task::spawn_blocking(move || thread.join().expect("broker thread panicked")).await.expect("join")
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.stop.take().map(|s| s.send(()));
    }
}
