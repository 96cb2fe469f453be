//! The proxies compared: usher (this binary's hidden `serve-usher`
//! subcommand, a child process), HAProxy (`haproxy -f FILE -db`, a child
//! process), nginx's stream proxy (`nginx -c FILE`, a child process, see
//! [`crate::nginx`]) and `direct` (no proxy). `usher-dashboard` is usher
//! with its admin API polled as an open dashboard does
//! ([`crate::stats_poller`]), to compare with plain usher run by run; it is
//! only run when named in `--proxies`. The proxies get the same
//! threads, maxconn, server maxconn, timeouts and retries, and are pinned
//! with taskset.

use std::cell::Cell;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};

use crate::layout::{Layout, LOAD_FRONTEND};
use crate::stats_poller::StatsPoller;

/// How long a proxy may take to start listening.
const START_LIMIT: Duration = Duration::from_secs(15);
/// Starts of a proxy whose ports were handed over, when one was taken.
const HANDOVER_ATTEMPTS: usize = 3;
/// Timeouts given to both proxies (the queue timeout is per case).
pub(crate) const CONNECT_TIMEOUT: &str = "5s";
pub(crate) const IDLE_TIMEOUT: &str = "30s";
pub(crate) const RETRIES: u32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProxyKind {
    Usher,
    Haproxy,
    Nginx,
    Direct,
    /// usher with `GET /stats` once a second, as an open dashboard does.
    UsherDashboard,
    /// usher with one session hook that does nothing on its frontend: what
    /// the extension seam costs a session.
    UsherHook,
    /// One usher in cluster mode, alone in its etcd prefix (the `cluster`
    /// case only, which starts it itself).
    UsherCluster,
    /// Two usher instances sharing every server's maxconn through etcd,
    /// the load split evenly (the `cluster` case only).
    UsherPair,
    /// usher with one SNI routing rule: it peeks at every ClientHello (the
    /// `routing` case only).
    UsherSni,
    /// HAProxy routing by `req_ssl_sni` after `tcp-request inspect-delay`
    /// (the `routing` case only).
    HaproxySni,
    /// usher with `queue.discipline = "codel"` (the `overload` case only).
    UsherCodel,
    /// usher with `queue.discipline = "adaptive_lifo"` (the `overload` case only).
    UsherLifo,
    /// usher configured with many frontends and backends, the load on one
    /// (the `backends` case only, which sets the [`Layout`]).
    UsherBig,
    /// HAProxy with the same frontends and backends as `usher-big`.
    HaproxyBig,
}

impl ProxyKind {
    /// The default comparison.
    pub const ALL: [ProxyKind; 4] = [ProxyKind::Usher, ProxyKind::Haproxy, ProxyKind::Nginx, ProxyKind::Direct];
    /// Every proxy `--proxies` may name.
    pub const NAMED: [ProxyKind; 6] = [
        ProxyKind::Usher,
        ProxyKind::Haproxy,
        ProxyKind::Nginx,
        ProxyKind::Direct,
        ProxyKind::UsherDashboard,
        ProxyKind::UsherHook,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ProxyKind::Usher => "usher",
            ProxyKind::Haproxy => "haproxy",
            ProxyKind::Nginx => "nginx",
            ProxyKind::Direct => "direct",
            ProxyKind::UsherDashboard => "usher-dashboard",
            ProxyKind::UsherHook => "usher-hook",
            ProxyKind::UsherCluster => "usher-cluster",
            ProxyKind::UsherPair => "usher-pair",
            ProxyKind::UsherSni => "usher-sni",
            ProxyKind::HaproxySni => "haproxy-sni",
            ProxyKind::UsherCodel => "usher-codel",
            ProxyKind::UsherLifo => "usher-lifo",
            ProxyKind::UsherBig => "usher-big",
            ProxyKind::HaproxyBig => "haproxy-big",
        }
    }

    pub fn parse(name: &str) -> anyhow::Result<ProxyKind> {
        ProxyKind::NAMED.into_iter().find(|p| p.name() == name).ok_or_else(|| {
            anyhow!("unknown proxy {name:?}; expected usher, haproxy, nginx, direct, usher-dashboard or usher-hook")
        })
    }
}

/// How a proxy runs for one case.
#[derive(Debug, Clone)]
pub struct Tune {
    /// usher `global.workers`, HAProxy `nbthread`.
    pub threads: usize,
    /// taskset CPU list for the proxy; `None` = unpinned.
    pub cpus: Option<String>,
    /// Global and frontend maxconn.
    pub maxconn: u32,
    /// Per-server maxconn; 0 = unlimited.
    pub server_maxconn: u32,
    pub queue_timeout: Duration,
    /// The backends' balancing algorithm, by usher's name.
    pub balance: &'static str,
    /// Frontends and backends configured; `servers` are split among the
    /// backends, the load goes to the first frontend.
    pub layout: Layout,
}

/// HAProxy's spelling of usher's algorithm `balance` (consistent hashing
/// for `source`, two draws for `random`, as usher's defaults).
pub fn haproxy_balance(balance: &str) -> String {
    match balance {
        "random" => "random(2)".to_owned(),
        "source" => "source\n    hash-type consistent".to_owned(),
        other => other.to_owned(),
    }
}

/// A running proxy; killed when dropped.
pub struct Running {
    pub kind: ProxyKind,
    /// Where the load goes (the backend itself for `direct`).
    pub addr: SocketAddr,
    child: Option<Child>,
    /// Where the child's total CPU seconds are added when it is stopped.
    spent: Rc<Cell<f64>>,
    /// `usher-dashboard`'s poller; stopped before the child.
    poller: Option<StatsPoller>,
    /// Where usher's admin API listens, when it has one.
    pub admin: Option<SocketAddr>,
}

impl Running {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn cpu_seconds(&self) -> Option<f64> {
        self.pid().and_then(|pid| crate::sys::cpu_seconds(pid).ok())
    }

    /// Context switches of the proxy's threads so far (`None` for `direct`).
    pub fn context_switches(&self) -> Option<u64> {
        self.pid().and_then(|pid| crate::sys::context_switches(pid).ok())
    }

    /// CPU seconds the proxy uses over the measured part of `w` (`None`
    /// for `direct`); run it alongside the load.
    pub async fn cpu_during(&self, w: crate::load::Window) -> Option<f64> {
        tokio::time::sleep_until(w.measure).await;
        let before = self.cpu_seconds();
        tokio::time::sleep_until(w.end).await;
        Some(self.cpu_seconds()? - before?)
    }

    /// `/stats` polls answered and failed so far (`usher-dashboard` only).
    pub fn stats_polls(&self) -> Option<(u64, u64)> {
        self.poller.as_ref().map(StatsPoller::polls)
    }

    pub fn rss_kib(&self) -> Option<u64> {
        self.pid().and_then(|pid| crate::sys::rss_kib(pid).ok())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        drop(self.poller.take());
        if let Some(child) = &mut self.child {
            let cpu = crate::sys::cpu_seconds(child.id()).unwrap_or(0.0);
            self.spent.set(self.spent.get() + cpu);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts proxies; `workdir` holds their config files and stderr logs.
pub struct Launcher {
    /// This benchmark's binary, which has the `serve-usher` subcommand.
    pub exe: PathBuf,
    pub haproxy: Option<PathBuf>,
    pub nginx: Option<crate::nginx::Nginx>,
    pub workdir: PathBuf,
    /// CPU seconds of the proxies stopped so far.
    pub spent: Rc<Cell<f64>>,
}

impl Launcher {
    pub fn start(&self, kind: ProxyKind, servers: &[SocketAddr], tune: &Tune, run: usize) -> anyhow::Result<Running> {
        let stem = self.workdir.join(format!("{}-{run}", kind.name()));
        match kind {
            ProxyKind::Direct => {
                let addr = *servers.first().ok_or_else(|| anyhow!("no backend"))?;
                Ok(Running { kind, addr, child: None, spent: self.spent.clone(), poller: None, admin: None })
            }
            ProxyKind::Usher
            | ProxyKind::UsherDashboard
            | ProxyKind::UsherHook
            | ProxyKind::UsherSni
            | ProxyKind::UsherCodel
            | ProxyKind::UsherLifo
            | ProxyKind::UsherBig => {
                let dashboard = kind == ProxyKind::UsherDashboard;
                let extra = match kind {
                    ProxyKind::UsherSni => USHER_SNI_ROUTE,
                    ProxyKind::UsherCodel => "\n[backends.app.queue]\ndiscipline = \"codel\"\n",
                    ProxyKind::UsherLifo => "\n[backends.app.queue]\ndiscipline = \"adaptive_lifo\"\n",
                    _ => "",
                };
                let mut running = self.usher(kind, &stem, servers, tune, dashboard, extra)?;
                // The frontend listens once usher_core::run is under way; the
                // admin API starts with it, so the first polls may fail.
                running.poller = running.admin.filter(|_| dashboard).map(StatsPoller::start);
                Ok(running)
            }
            ProxyKind::UsherCluster | ProxyKind::UsherPair => {
                bail!("{} is started by the cluster case only", kind.name())
            }
            ProxyKind::Haproxy | ProxyKind::HaproxySni | ProxyKind::HaproxyBig => {
                let exe = self.haproxy.as_ref().ok_or_else(|| anyhow!("haproxy not found"))?;
                // The ports are handed over (see `free_port`): one taken in
                // between fails HAProxy's start, and with 50 frontends that
                // race was seen in one run of two. Fresh ports, then.
                let mut attempt = 1;
                loop {
                    match self.haproxy(kind, exe, &stem, servers, tune) {
                        Err(err)
                            if attempt < HANDOVER_ATTEMPTS && format!("{err:#}").contains("Address already in use") =>
                        {
                            attempt += 1;
                        }
                        outcome => return outcome,
                    }
                }
            }
            ProxyKind::Nginx => {
                let nginx = self.nginx.as_ref().ok_or_else(|| anyhow!("nginx with its stream module not found"))?;
                anyhow::ensure!(
                    tune.layout == Layout::SINGLE,
                    "nginx is configured with one frontend and backend only"
                );
                let addr = free_port()?;
                let config = stem.with_extension("conf");
                let pid = stem.with_extension("pid");
                std::fs::write(&config, crate::nginx::config(&nginx.stream, addr, servers, tune, &pid)?)?;
                let mut cmd = wrapped(tune, &nginx.exe);
                // -p: relative paths under the run's directory, not /usr/share/nginx;
                // -e: errors before the configuration is read go to stderr too,
                // not to the packaged /var/log/nginx/error.log.
                cmd.arg("-p").arg(&self.workdir).arg("-e").arg("stderr").arg("-c").arg(&config);
                let child = spawn_logged(cmd, &stem, Stdio::null())?;
                let mut running =
                    Running { kind, addr, child: Some(child), spent: self.spent.clone(), poller: None, admin: None };
                wait_accepting(&mut running, &stem)?;
                Ok(running)
            }
        }
    }
}

impl Launcher {
    fn haproxy(
        &self,
        kind: ProxyKind,
        exe: &Path,
        stem: &Path,
        servers: &[SocketAddr],
        tune: &Tune,
    ) -> anyhow::Result<Running> {
        let binds = free_ports(tune.layout.frontends)?;
        let addr = binds[0];
        let config = stem.with_extension("cfg");
        let mut cfg = haproxy_cfg(&binds, servers, tune)?;
        if kind == ProxyKind::HaproxySni {
            cfg = cfg.replace(HAPROXY_DEFAULT_BACKEND, HAPROXY_SNI_ROUTE);
        }
        std::fs::write(&config, cfg)?;
        let mut cmd = wrapped(tune, exe);
        cmd.arg("-f").arg(&config).arg("-db");
        let child = spawn_logged(cmd, stem, Stdio::null())?;
        let mut running =
            Running { kind, addr, child: Some(child), spent: self.spent.clone(), poller: None, admin: None };
        wait_accepting(&mut running, stem)?;
        Ok(running)
    }

    /// usher through this binary's `serve-usher`, with an admin API when
    /// `admin`, and `extra` appended to its configuration.
    pub fn usher(
        &self,
        kind: ProxyKind,
        stem: &Path,
        servers: &[SocketAddr],
        tune: &Tune,
        admin: bool,
        extra: &str,
    ) -> anyhow::Result<Running> {
        let admin = if admin { Some(free_port()?) } else { None };
        let config = stem.with_extension("toml");
        std::fs::write(&config, usher_toml(servers, tune, admin)? + extra)?;
        let mut cmd = wrapped(tune, &self.exe);
        cmd.arg("serve-usher").arg("--config").arg(&config);
        if kind == ProxyKind::UsherHook {
            cmd.arg("--noop-hook");
        }
        let (child, addr) = spawn_reporting(cmd, stem)?;
        Ok(Running { kind, addr, child: Some(child), spent: self.spent.clone(), poller: None, admin })
    }
}

/// A port for a proxy that must be told which one to listen on (HAProxy,
/// nginx, usher's admin API): a free one from the kernel, handed over. Another process could
/// grab it in between; this small race exists only here, in the benchmark.
pub fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// `n` free ports, all held until the last is picked, so that no two are
/// the same (the kernel may hand a port just closed out again).
fn free_ports(n: usize) -> anyhow::Result<Vec<SocketAddr>> {
    let held = (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0")).collect::<std::io::Result<Vec<_>>>()?;
    Ok(held.iter().map(std::net::TcpListener::local_addr).collect::<std::io::Result<Vec<_>>>()?)
}

/// `program` under `taskset -c CPUS` when pinned, and under `setpriv
/// --pdeathsig KILL` when available, so a proxy never outlives a killed
/// benchmark. Both exec the next program: the pid stays the proxy's.
fn wrapped(tune: &Tune, program: &Path) -> Command {
    pinned_and_guarded(tune.cpus.as_deref(), program)
}

/// `program` under `setpriv --pdeathsig KILL` when available (see [`wrapped`]).
pub fn guarded(program: &Path) -> Command {
    pinned_and_guarded(None, program)
}

/// `program` under `taskset -c CPUS` when `cpus` is given, and guarded.
pub fn pinned_and_guarded(cpus: Option<&str>, program: &Path) -> Command {
    let mut argv: Vec<std::ffi::OsString> = Vec::new();
    if let Some(cpus) = cpus {
        argv.extend(["taskset".into(), "-c".into(), cpus.into()]);
    }
    if has_setpriv() {
        argv.extend(["setpriv".into(), "--pdeathsig".into(), "KILL".into()]);
    }
    argv.push(program.into());
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    cmd
}

fn has_setpriv() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        Command::new("setpriv").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
    })
}

fn spawn_logged(mut cmd: Command, stem: &Path, stdout: Stdio) -> anyhow::Result<Child> {
    let log = std::fs::File::create(stem.with_extension("log"))?;
    cmd.stdin(Stdio::null()).stdout(stdout).stderr(log);
    cmd.spawn().with_context(|| format!("cannot start {cmd:?}"))
}

fn log_tail(stem: &Path) -> String {
    let text = std::fs::read_to_string(stem.with_extension("log")).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

/// Starts a child that binds port 0 itself and prints `LISTENING <frontend>
/// <addr>` for each frontend: the address of [`LOAD_FRONTEND`] is returned.
fn spawn_reporting(cmd: Command, stem: &Path) -> anyhow::Result<(Child, SocketAddr)> {
    let mut child = spawn_logged(cmd, stem, Stdio::piped())?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let (tx, rx) = mpsc::channel();
    let wanted = format!("LISTENING {LOAD_FRONTEND} ");
    std::thread::spawn(move || {
        // Reads to the end, not to the wanted line: a pipe closed under the
        // child would fail its next write (its other frontends' lines come
        // after), and the child would die of it in the middle of a run.
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(addr) = line.strip_prefix(&wanted) {
                let _ = tx.send(addr.trim().parse::<SocketAddr>());
            }
        }
    });
    match rx.recv_timeout(START_LIMIT) {
        Ok(Ok(addr)) => Ok((child, addr)),
        other => {
            let _ = child.kill();
            let _ = child.wait();
            bail!("usher did not report its address ({other:?}); its log:\n{}", log_tail(stem))
        }
    }
}

/// Polls until the proxy accepts connections, or fails if it exits.
fn wait_accepting(running: &mut Running, stem: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_LIMIT;
    loop {
        if let Some(child) = &mut running.child {
            if let Some(status) = child.try_wait()? {
                bail!("{} exited with {status}; its log:\n{}", running.kind.name(), log_tail(stem));
            }
        }
        if std::net::TcpStream::connect_timeout(&running.addr, Duration::from_millis(100)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{} did not listen on {}; its log:\n{}", running.kind.name(), running.addr, log_tail(stem));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `admin`: where the admin API listens, if anywhere.
fn usher_toml(servers: &[SocketAddr], tune: &Tune, admin: Option<SocketAddr>) -> anyhow::Result<String> {
    let mut toml = format!(
        r#"[global]
maxconn = {maxconn}
workers = {threads}
grace = "1s"

[log]
level = "error"

# No admin API unless the dashboard's polling is measured: brokers may run
# side by side.
[admin]
bind = "{admin}"
"#,
        maxconn = tune.maxconn,
        threads = tune.threads,
        admin = admin.map_or(String::new(), |a| a.to_string()),
    );
    for f in tune.layout.frontends() {
        toml.push_str(&format!(
            r#"
[frontends.{name}]
bind = ["127.0.0.1:0"]
backend = "{backend}"
maxconn = {maxconn}
backlog = 4096

[frontends.{name}.timeout]
client = "{IDLE_TIMEOUT}"
"#,
            name = f.name,
            backend = f.backend,
            maxconn = tune.maxconn,
        ));
    }
    for (name, servers) in tune.layout.backends(servers)? {
        toml.push_str(&format!(
            r#"
[backends.{name}]
balance = "{balance}"
retries = {RETRIES}
redispatch = true

[backends.{name}.timeout]
queue = "{queue}ms"
connect = "{CONNECT_TIMEOUT}"
server = "{IDLE_TIMEOUT}"
"#,
            queue = tune.queue_timeout.as_millis(),
            balance = tune.balance,
        ));
        for (i, addr) in servers.iter().enumerate() {
            toml.push_str(&format!(
                "\n[backends.{name}.servers.s{i}]\naddress = \"{addr}\"\nmaxconn = {}\n",
                tune.server_maxconn
            ));
        }
    }
    Ok(toml)
}

/// usher's SNI rule: the rule's backend is the frontend's own, so both
/// proxies do the same work after the peek.
const USHER_SNI_ROUTE: &str = "\n[[frontends.bench.routes]]\nsni = [\"bench.example\"]\nbackend = \"app\"\n";
const HAPROXY_DEFAULT_BACKEND: &str = "    default_backend app\n";
/// HAProxy's documented way to route TCP by SNI without terminating TLS.
const HAPROXY_SNI_ROUTE: &str = "    tcp-request inspect-delay 5s\n    \
     tcp-request content accept if { req_ssl_hello_type 1 }\n    \
     use_backend app if { req_ssl_sni -i bench.example }\n    default_backend app\n";

/// `binds`: one address per frontend of the layout, the loaded one first.
fn haproxy_cfg(binds: &[SocketAddr], servers: &[SocketAddr], tune: &Tune) -> anyhow::Result<String> {
    let mut cfg = format!(
        "global\n    nbthread {threads}\n    maxconn {maxconn}\n\n\
         defaults\n    mode tcp\n    maxconn {maxconn}\n    retries {RETRIES}\n    option redispatch\n    \
         timeout connect {CONNECT_TIMEOUT}\n    timeout client {IDLE_TIMEOUT}\n    timeout server {IDLE_TIMEOUT}\n    \
         timeout queue {queue}ms\n",
        threads = tune.threads,
        maxconn = tune.maxconn,
        queue = tune.queue_timeout.as_millis(),
    );
    let frontends = tune.layout.frontends();
    anyhow::ensure!(binds.len() == frontends.len(), "{} addresses for {} frontends", binds.len(), frontends.len());
    for (f, bind) in frontends.iter().zip(binds) {
        cfg.push_str(&format!("\nfrontend {}\n    bind {bind}\n    default_backend {}\n", f.name, f.backend));
    }
    let balance = haproxy_balance(tune.balance);
    let limit = if tune.server_maxconn > 0 { format!(" maxconn {}", tune.server_maxconn) } else { String::new() };
    for (name, servers) in tune.layout.backends(servers)? {
        cfg.push_str(&format!("\nbackend {name}\n    balance {balance}\n"));
        for (i, addr) in servers.iter().enumerate() {
            cfg.push_str(&format!("    server s{i} {addr}{limit}\n"));
        }
    }
    Ok(cfg)
}

/// `haproxy -v`, first line; `None` when it cannot run.
pub fn haproxy_version(exe: &Path) -> Option<String> {
    let out = Command::new(exe).arg("-v").output().ok()?;
    String::from_utf8_lossy(&out.stdout).lines().next().map(str::to_owned)
}

/// The hidden `serve-usher --config FILE` subcommand: binds the frontends
/// (port 0 allowed), prints `LISTENING <frontend> <addr>` for each, and runs the
/// broker in an actix System until killed.
pub fn serve_usher(config: &Path, noop_hook: bool) -> anyhow::Result<()> {
    let toml = std::fs::read_to_string(config).with_context(|| format!("cannot read {}", config.display()))?;
    let mut registries = usher_core::extension::Registries::default();
    if noop_hook {
        registries.hooks.hook(NOOP_HOOK, NoopHook);
    }
    let sources = usher_core::config::ConfigSources::inline(&toml);
    let mut settings =
        usher_core::config::load_with(&sources, &registries).map_err(|e| anyhow!("invalid configuration: {e}"))?;
    if noop_hook {
        let terms = usher_core::extension::HookSettings {
            timeout: Duration::from_secs(1),
            on_timeout: usher_core::extension::OnHookTimeout::Pass,
            options: Default::default(),
        };
        settings.hooks.insert(NOOP_HOOK.to_owned(), terms);
        settings.frontends.iter_mut().for_each(|f| f.hooks = vec![NOOP_HOOK.to_owned()]);
    }
    let (log, _guard) = usher_core::logger(&settings.log);
    let listeners = usher_core::bind_all(&settings)?;
    for (frontend, bound) in &listeners.0 {
        for listener in bound {
            println!("LISTENING {frontend} {}", listener.local_addr()?);
        }
    }
    let extensions = usher_core::Extensions { hooks: registries.hooks, ..usher_core::Extensions::default() };
    let system = actix_rt::System::new();
    system.block_on(usher_core::run(settings, listeners, log, extensions, std::future::pending()))
}

/// The hook `usher-hook` runs: every method's default body, which does nothing.
const NOOP_HOOK: &str = "noop";

struct NoopHook;

impl usher_core::SessionHook for NoopHook {}

#[cfg(test)]
mod tests {
    use super::*;

    fn big_tune() -> Tune {
        Tune {
            threads: 2,
            cpus: None,
            maxconn: 1_000,
            server_maxconn: 50,
            queue_timeout: Duration::from_secs(3),
            balance: "roundrobin",
            layout: Layout { frontends: 5, backends: 20 },
        }
    }

    fn servers(n: u16) -> Vec<SocketAddr> {
        (0..n).map(|i| SocketAddr::from(([127, 0, 0, 1], 4000 + i))).collect()
    }

    #[test]
    fn usher_gets_every_frontend_and_backend_of_the_layout() {
        let toml = usher_toml(&servers(80), &big_tune(), None).unwrap();
        let settings = usher_core::config::load_with(
            &usher_core::config::ConfigSources::inline(&toml),
            &usher_core::extension::Registries::default(),
        )
        .unwrap_or_else(|e| panic!("{e}\n{toml}"));
        assert_eq!(settings.frontends.len(), 5);
        assert_eq!(settings.backends.len(), 20);
        let bench = settings.frontends.iter().find(|f| f.name == LOAD_FRONTEND).expect("the loaded frontend");
        assert_eq!(bench.backend, "app");
        let f1 = settings.frontends.iter().find(|f| f.name == "f1").expect("f1");
        assert_eq!(f1.backend, "b4");
        assert!(toml.contains("[backends.b19.servers.s3]\naddress = \"127.0.0.1:4079\"\nmaxconn = 50\n"), "{toml}");
    }

    #[test]
    fn haproxy_gets_one_bind_per_frontend_and_the_same_backends() {
        let binds: Vec<SocketAddr> = (0..5).map(|i| SocketAddr::from(([127, 0, 0, 1], 5000 + i))).collect();
        let cfg = haproxy_cfg(&binds, &servers(80), &big_tune()).unwrap();
        assert_eq!(cfg.matches("\nfrontend ").count(), 5, "{cfg}");
        assert_eq!(cfg.matches("\nbackend ").count(), 20, "{cfg}");
        assert!(cfg.contains("frontend bench\n    bind 127.0.0.1:5000\n    default_backend app\n"), "{cfg}");
        assert!(cfg.contains("frontend f1\n    bind 127.0.0.1:5001\n    default_backend b4\n"), "{cfg}");
        assert!(cfg.contains("backend b19\n    balance roundrobin\n"), "{cfg}");
        assert!(cfg.contains("    server s3 127.0.0.1:4079 maxconn 50\n"), "{cfg}");
        // The SNI variant rewrites the loaded frontend's line only.
        assert_eq!(cfg.matches(HAPROXY_DEFAULT_BACKEND).count(), 1, "{cfg}");
        assert!(haproxy_cfg(&binds[..1], &servers(80), &big_tune()).is_err());
    }
}
