//! `usher-bench`: command line. `usher-bench all`, or one case by name;
//! `--quick` for tiny runs (CI). The hidden `serve-usher --config FILE` is
//! how the benchmark runs usher as a pinned child process.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{Parser, Subcommand};
use usher_bench::proxies::{serve_usher, ProxyKind};
use usher_bench::{sys, targets, Case, Harness, Options};

/// The same allocator as the daemon, so `serve-usher` measures usher as shipped.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "usher-bench", about = "usher vs HAProxy vs nginx vs no proxy, on 127.0.0.1")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Measured time of each run ("5s", "500ms").
    #[arg(long, global = true, value_parser = humantime::parse_duration, default_value = "5s")]
    duration: Duration,
    /// Unmeasured warm-up at the start of each run.
    #[arg(long, global = true, value_parser = humantime::parse_duration, default_value = "1s")]
    warmup: Duration,
    /// Runs of each case per proxy (alternated A B C A B C …).
    #[arg(long, global = true, default_value_t = 3)]
    repeats: usize,
    /// Tiny runs (about a second each, 1 repeat, 500 idle connections), as CI runs it.
    #[arg(long, global = true)]
    quick: bool,
    /// Proxies to compare, comma-separated.
    #[arg(long, global = true, value_delimiter = ',', default_value = "usher,haproxy,nginx,direct")]
    proxies: Vec<String>,
    /// Do not pin with taskset.
    #[arg(long, global = true)]
    no_pin: bool,
    /// Idle connections in the `idle` case.
    #[arg(long, global = true, default_value_t = 10_000)]
    idle_conns: usize,
    /// Longest wait before each run for other processes to stop using the CPUs ("0" = don't wait).
    #[arg(long, global = true, value_parser = humantime::parse_duration, default_value = "2m")]
    quiet_wait: Duration,
    /// The HAProxy binary.
    #[arg(long, global = true, default_value = "/usr/sbin/haproxy")]
    haproxy: PathBuf,
    /// The nginx binary (its stream module is looked for in the usual module directories).
    #[arg(long, global = true, default_value = "/usr/sbin/nginx")]
    nginx: PathBuf,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Every case, in order.
    All,
    /// New TCP connection per request: sessions/s, p50/p99.
    Connrate,
    /// One long connection per client, ping-pong: round trips/s, p50/p99.
    Keepalive,
    /// Bulk transfer, 1 and 4 streams: Gbit/s, proxy CPU s/GB.
    Throughput,
    /// Idle connections through the proxy: proxy RSS per connection.
    Idle,
    /// Servers with maxconn 1 and many clients: sessions/s, waits, stuck, peak.
    Queue,
    /// Reserve→grant→Release cycles/s through one BackendQueue (in process).
    Actors,
    /// 50 clients seated, then closed: delay from the client's close() to the server's EOF, p50/p99.
    Close,
    /// Per connrate session: proxy CPU µs and system calls (strace -c), over a fixed number of sessions.
    Cost {
        /// Sessions per batch (one batch timed, one under strace).
        #[arg(long, default_value_t = 20_000)]
        sessions: u64,
    },
    /// Two usher instances sharing one server's maxconn through etcd vs
    /// one: aggregate sessions/s and the time to rebalance the slots
    /// (needs etcd, and usher-bench built with `--features cluster`).
    Cluster,
    /// Short sessions whose request is a TLS ClientHello, through usher and
    /// HAProxy with and without a rule routing by its SNI: the peek's cost.
    Routing,
    /// Open-loop arrivals at 0.8×, 1.5× then 0.8× of capacity, for usher's
    /// fifo, codel and adaptive_lifo queues and HAProxy: goodput, late
    /// sessions, waits, recovery.
    Overload,
    /// Sessions/s through one backend of 2, 100, 1 000 and 10 000 servers, per algorithm.
    Scale {
        /// Only these algorithms (comma-separated; default: all six).
        #[arg(long, value_delimiter = ',')]
        balance: Vec<String>,
        /// Only these numbers of servers (comma-separated; default: 2,100,1000,10000).
        #[arg(long, value_delimiter = ',')]
        servers: Vec<usize>,
    },
    /// One server with maxconn 1 held, N silent clients queued behind it:
    /// proxy RSS per queued client, then sessions/s draining the queue.
    Queued,
    /// 10 000 servers in 500 backends reloaded under a steady load (in
    /// process): apply time, the load's p99 before and during the reload.
    Reload,
    /// One frontend's short sessions through usher and HAProxy configured with
    /// 1 frontend × 1 backend × 4 servers and with 50 × 500 × 4: sessions/s, CPU per session.
    Backends,
    /// Reads of the report (`GET /stats`) with 10 000 servers in 500 backends
    /// and in one (in process): ms per read, and what a message to the
    /// actors' thread waits meanwhile.
    Stats,
    /// Runs usher on FILE and prints `LISTENING <frontend> <addr>` (used by the bench).
    #[command(hide = true)]
    ServeUsher {
        #[arg(long)]
        config: PathBuf,
        /// Runs one session hook that does nothing on every frontend.
        #[arg(long)]
        noop_hook: bool,
    },
}

fn main() -> ExitCode {
    // usher's broker turns transparent huge pages off for its process, and
    // the flag passes to every child: the bench turns them off first, so
    // HAProxy, nginx and the backends it starts run under the same policy
    // whichever case ran before (on a kernel whose THP is `madvise`, none
    // of them asks for huge pages anyway).
    if let Err(err) = rustix::thread::disable_transparent_huge_pages(true) {
        eprintln!("usher-bench: transparent huge pages stay on: {err}");
    }
    let cli = Cli::parse();
    let cases: Vec<Case> = match &cli.command {
        Command::ServeUsher { config, noop_hook } => {
            return match serve_usher(config, *noop_hook) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("serve-usher: {err:#}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::All => Case::ALL.to_vec(),
        Command::Connrate => vec![Case::Connrate],
        Command::Keepalive => vec![Case::Keepalive],
        Command::Throughput => vec![Case::Throughput],
        Command::Idle => vec![Case::Idle],
        Command::Queue => vec![Case::Queue],
        Command::Actors => vec![Case::Actors],
        Command::Close => vec![Case::Close],
        Command::Cluster => vec![Case::Cluster],
        Command::Routing => vec![Case::Routing],
        Command::Overload => vec![Case::Overload],
        Command::Scale { .. } => vec![Case::Scale],
        Command::Queued => vec![Case::Queued],
        Command::Reload => vec![Case::Reload],
        Command::Backends => vec![Case::Backends],
        Command::Stats => vec![Case::Stats],
        Command::Cost { .. } => vec![Case::Cost],
    };
    match bench(&cli, &cases) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("usher-bench: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `cases`; `false` if a run failed.
fn bench(cli: &Cli, cases: &[Case]) -> anyhow::Result<bool> {
    let exe = std::env::current_exe()?;
    let mut opts = Options::new(exe);
    opts.duration = cli.duration;
    opts.warmup = cli.warmup;
    opts.repeats = cli.repeats.max(1);
    opts.pin = !cli.no_pin;
    opts.idle_conns = cli.idle_conns.max(1);
    opts.haproxy = cli.haproxy.clone();
    opts.nginx = cli.nginx.clone();
    opts.proxies = cli.proxies.iter().map(|p| ProxyKind::parse(p.trim())).collect::<anyhow::Result<_>>()?;
    opts.quiet_wait = cli.quiet_wait;
    if let Command::Cost { sessions } = cli.command {
        opts.cost_sessions = sessions.max(1);
    }
    if let Command::Scale { balance, servers } = &cli.command {
        opts.scale = usher_bench::cases::ScaleOnly::new(balance, servers)?;
    }
    if cli.quick {
        opts = opts.quick();
    }
    let harness = Harness::new(opts)?;
    print_header(&harness);
    let mut results = Vec::new();
    for &case in cases {
        results.extend(harness.run(case));
    }
    let verdicts = targets::evaluate(&results);
    // `cost` has no target: no empty "targets" heading after its tables.
    if !verdicts.is_empty() {
        print!("{}", targets::render(&verdicts));
    }
    Ok(results.iter().all(|r| r.errors.is_empty()))
}

fn print_header(h: &Harness) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    println!("usher-bench {}", env!("CARGO_PKG_VERSION"));
    println!("date:     {}", humantime::format_rfc3339_seconds(SystemTime::now()));
    println!("command:  usher-bench {}", args.join(" "));
    println!("machine:  {} cores, Linux {}", sys::cores(), sys::kernel());
    println!("haproxy:  {}", h.haproxy_version.as_deref().unwrap_or("not installed"));
    println!("nginx:    {}", h.nginx_version.as_deref().unwrap_or("not installed (or no stream module)"));
    let proxies: Vec<&str> = h.proxies.iter().map(|p| p.name()).collect();
    println!("proxies:  {} (alternated run by run)", proxies.join(", "));
    println!(
        "runs:     {} warm-up + {} measured, {} repeat(s){}",
        humantime::format_duration(h.opts.warmup),
        humantime::format_duration(h.opts.duration),
        h.opts.repeats,
        if h.opts.quick { " (--quick)" } else { "" }
    );
    println!("pinning:  {}", if h.pinned { "taskset" } else { "none" });
    for note in &h.notes {
        println!("note:     {note}");
    }
}
