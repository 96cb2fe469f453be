//! nginx's stream proxy as a peer: finding the binary and its stream
//! module, and writing its configuration. nginx runs in the foreground as
//! one process (`daemon off; master_process off;`), so its pid is the
//! proxy's and `/proc/PID/stat` holds all of its CPU, as with HAProxy's
//! single process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::bail;

use crate::proxies::{Tune, CONNECT_TIMEOUT, IDLE_TIMEOUT, RETRIES};

/// Where distributions put nginx's dynamic modules (Debian's
/// `libnginx-mod-stream`: `/usr/lib/nginx/modules`, linked from
/// `/usr/share/nginx/modules`; Fedora: `/usr/lib64/nginx/modules`).
const MODULE_DIRS: [&str; 4] =
    ["/usr/lib/nginx/modules", "/usr/share/nginx/modules", "/usr/lib64/nginx/modules", "/usr/local/nginx/modules"];
const STREAM_MODULE: &str = "ngx_stream_module.so";
/// Listen backlog, as usher's frontend (nginx's own default is 511).
const BACKLOG: u32 = 4096;
/// nginx connections that are not proxied ones (the listener, spare).
const SPARE_CONNECTIONS: u32 = 64;

/// How this nginx gets its `stream` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamModule {
    /// Compiled in (`--with-stream`).
    BuiltIn,
    /// A dynamic module, loaded with `load_module`.
    Dynamic(PathBuf),
}

/// An nginx binary that can proxy TCP.
#[derive(Debug, Clone)]
pub struct Nginx {
    pub exe: PathBuf,
    /// `nginx -v`, e.g. "nginx/1.22.1".
    pub version: String,
    pub stream: StreamModule,
}

impl Nginx {
    /// nginx at `exe` with its stream module, or why it cannot take part
    /// (a sentence for the bench's header).
    pub fn find(exe: &Path) -> Result<Nginx, String> {
        let missing =
            || format!("nginx not found at {}: install with apt-get install nginx-light; skipping", exe.display());
        // `nginx -V` prints the version and configure arguments on stderr.
        let out = Command::new(exe).arg("-V").output().map_err(|_| missing())?;
        let text = String::from_utf8_lossy(&out.stderr);
        let version =
            text.lines().find_map(|l| l.strip_prefix("nginx version: ")).map(str::to_owned).ok_or_else(missing)?;
        let stream = stream_module(&text, MODULE_DIRS.iter().map(Path::new)).ok_or_else(|| {
            format!(
                "nginx's stream module ({STREAM_MODULE}) not found in {}: install with apt-get install \
                 libnginx-mod-stream; skipping nginx",
                MODULE_DIRS.join(", ")
            )
        })?;
        Ok(Nginx { exe: exe.to_owned(), version, stream })
    }
}

/// How the nginx whose `nginx -V` output is `configure` gets its stream
/// module: compiled in, or the first `ngx_stream_module.so` in `dirs`.
pub fn stream_module<'a>(configure: &str, dirs: impl IntoIterator<Item = &'a Path>) -> Option<StreamModule> {
    if configure.split_whitespace().any(|arg| arg == "--with-stream") {
        return Some(StreamModule::BuiltIn);
    }
    dirs.into_iter().map(|d| d.join(STREAM_MODULE)).find(|p| p.is_file()).map(StreamModule::Dynamic)
}

/// The configuration for one run: the same timeouts and retries as the
/// other peers, listening on `bind`, round robin over `servers`, its pid
/// file at `pid`, errors on stderr (the bench sends that to the run's log).
///
/// nginx OSS has no server maxconn queue, so a `tune` with a server
/// maxconn is refused rather than silently run without one; and it runs one
/// process, so only one thread.
pub fn config(
    module: &StreamModule,
    bind: SocketAddr,
    servers: &[SocketAddr],
    tune: &Tune,
    pid: &Path,
) -> anyhow::Result<String> {
    if tune.threads != 1 {
        bail!("the nginx peer runs as one process (master_process off): {} threads asked", tune.threads);
    }
    if tune.server_maxconn != 0 {
        bail!("nginx has no per-server maxconn with a queue: server maxconn {} asked", tune.server_maxconn);
    }
    if servers.is_empty() {
        bail!("no backend");
    }
    let load = match module {
        StreamModule::BuiltIn => String::new(),
        StreamModule::Dynamic(path) => format!("load_module {};\n", path.display()),
    };
    // Each proxied session holds two nginx connections (client, server).
    let connections = tune.maxconn.saturating_mul(2).saturating_add(SPARE_CONNECTIONS);
    let upstreams: String = servers.iter().map(|s| format!("        server {s};\n")).collect();
    Ok(format!(
        "{load}daemon off;
master_process off;
worker_processes 1;
pid {pid};
error_log stderr error;

events {{
    worker_connections {connections};
}}

stream {{
    upstream app {{
{upstreams}    }}

    server {{
        listen {bind} backlog={BACKLOG};
        proxy_pass app;
        proxy_connect_timeout {CONNECT_TIMEOUT};
        # One idle timeout for both sides, as timeout client/server.
        proxy_timeout {IDLE_TIMEOUT};
        # The first try and {RETRIES} retries, on the next server.
        proxy_next_upstream on;
        proxy_next_upstream_tries {tries};
    }}
}}
",
        pid = pid.display(),
        tries = RETRIES + 1,
    ))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn tune() -> Tune {
        Tune {
            threads: 1,
            cpus: None,
            maxconn: 12_000,
            server_maxconn: 0,
            queue_timeout: Duration::from_secs(10),
            balance: "roundrobin",
            layout: crate::layout::Layout::SINGLE,
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn config_has_the_peers_timeouts_backends_and_files() {
        let module = StreamModule::Dynamic(PathBuf::from("/usr/lib/nginx/modules/ngx_stream_module.so"));
        let servers = [addr("127.0.0.1:4001"), addr("127.0.0.1:4002")];
        let cfg = config(&module, addr("127.0.0.1:5000"), &servers, &tune(), Path::new("/tmp/b/nginx-3.pid")).unwrap();
        for line in [
            "load_module /usr/lib/nginx/modules/ngx_stream_module.so;",
            "daemon off;",
            "master_process off;",
            "pid /tmp/b/nginx-3.pid;",
            "error_log stderr error;",
            "worker_connections 24064;",
            "server 127.0.0.1:4001;",
            "server 127.0.0.1:4002;",
            "listen 127.0.0.1:5000 backlog=4096;",
            "proxy_pass app;",
            "proxy_connect_timeout 5s;",
            "proxy_timeout 30s;",
            "proxy_next_upstream_tries 4;",
        ] {
            assert!(cfg.lines().any(|l| l.trim() == line), "missing {line:?} in:\n{cfg}");
        }
        // load_module is only valid before any block.
        assert!(cfg.starts_with("load_module "), "{cfg}");
    }

    #[test]
    fn built_in_stream_needs_no_load_module() {
        let cfg =
            config(&StreamModule::BuiltIn, addr("127.0.0.1:5000"), &[addr("127.0.0.1:4001")], &tune(), Path::new("p"))
                .unwrap();
        assert!(!cfg.contains("load_module"), "{cfg}");
    }

    #[test]
    fn config_refuses_what_the_peer_cannot_do() {
        let (bind, servers) = (addr("127.0.0.1:5000"), [addr("127.0.0.1:4001")]);
        let two_threads = Tune { threads: 2, ..tune() };
        let err = config(&StreamModule::BuiltIn, bind, &servers, &two_threads, Path::new("p")).unwrap_err();
        assert!(err.to_string().contains("2 threads"), "{err}");
        let queued = Tune { server_maxconn: 1, ..tune() };
        let err = config(&StreamModule::BuiltIn, bind, &servers, &queued, Path::new("p")).unwrap_err();
        assert!(err.to_string().contains("maxconn 1"), "{err}");
        assert!(config(&StreamModule::BuiltIn, bind, &[], &tune(), Path::new("p")).is_err());
    }

    #[test]
    fn stream_module_is_built_in_or_found_on_disk() {
        let dir = std::env::temp_dir().join(format!("usher-bench-nginx-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        std::fs::write(dir.join(STREAM_MODULE), b"").unwrap();
        let dynamic = "configure arguments: --with-stream=dynamic --with-http_ssl_module";
        assert_eq!(stream_module("configure arguments: --with-stream", [empty.as_path()]), Some(StreamModule::BuiltIn));
        assert_eq!(stream_module(dynamic, [empty.as_path()]), None);
        assert_eq!(
            stream_module(dynamic, [empty.as_path(), dir.as_path()]),
            Some(StreamModule::Dynamic(dir.join(STREAM_MODULE)))
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
