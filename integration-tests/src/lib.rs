//! Harness for real-socket tests: brokers and backends on 127.0.0.1 port 0,
//! bound before use and passed in (never bind-then-drop), readiness by
//! construction (a bound listener queues clients until it is served), and a
//! log capture that tests wait on instead of sleeping.
//!
//! - [`broker`]: [`TestBroker`] runs `usher_core::run` in its own actix System.
//! - [`backend`]: [`TestBackend`] servers that record their peak concurrency.
//! - [`logs`]: [`LogCapture`], the broker's records as key-value maps.
//! - [`http`]: a minimal HTTP/1.1 client for the admin API.
//! - [`sockets`]: the kernel's view of this process's TCP sockets.
//! - [`daemon`]: the `usher` binary as a real process (SIGKILL, systemd).
//! - [`etcd`]: a real etcd on 127.0.0.1 for cluster-mode tests.
//! - [`partition`]: a TCP relay a test cuts and heals (one instance off etcd).
//! - [`external`]: real third-party servers (PostgreSQL, Redis) for the recipes.
//! - [`heap_by_size`]: live heap blocks by size, for what a waiting or idle
//!   session keeps.

pub mod backend;
pub mod broker;
pub mod counted_sessions;
pub mod daemon;
pub mod dns;
pub mod etcd;
pub mod external;
pub mod heap_by_size;
pub mod http;
pub mod logs;
pub mod partition;
pub mod sockets;

pub use backend::{Behavior, TestBackend};
pub use broker::TestBroker;
pub use logs::{LogCapture, Record};

use std::time::Duration;

/// A configuration file in a directory of its own, removed on drop: what a
/// reloadable broker ([`TestBroker::start_reloadable`]) reads again.
pub struct ConfigFile(pub std::path::PathBuf);

impl ConfigFile {
    pub fn new(name: &str, toml: &str) -> ConfigFile {
        let dir = std::env::temp_dir().join(format!("usher-test-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = ConfigFile(dir.join("usher.toml"));
        file.write(toml);
        file
    }

    pub fn write(&self, toml: &str) {
        std::fs::write(&self.0, toml).expect("write config");
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Generous bound for anything a test waits for; only reached on failure.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A listener on 127.0.0.1, port 0, with a large backlog.
pub fn listener() -> std::net::TcpListener {
    usher_core::net::bind_listener("127.0.0.1:0".parse().expect("address"), 4096).expect("bind 127.0.0.1:0")
}

/// Connects, writes `payload`, half-closes, reads to EOF.
pub async fn request(addr: std::net::SocketAddr, payload: &[u8]) -> std::io::Result<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(payload).await?;
    stream.shutdown().await?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await?;
    Ok(reply)
}

/// Connects through an echo backend, sends `byte` and waits for its echo:
/// on return the session holds a server slot.
pub async fn seated(addr: std::net::SocketAddr, byte: u8) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(addr).await.expect("connect");
    c.write_all(&[byte]).await.expect("write");
    let mut b = [0u8; 1];
    c.read_exact(&mut b).await.expect("seated and echoed");
    c
}

// Fault injection: servers that misbehave on purpose, and the one check that
// everything is back once a fault's traffic ended.
pub mod at_rest;
// Spawned servers: a registry their test processes report to.
pub mod faulty_server;
pub mod full_backlog;
pub mod spawn_registry;

pub use at_rest::{assert_everything_back, ServerUnderTest};
pub use faulty_server::{Fault, FaultyServer, Script};
pub use full_backlog::FullBacklogServer;
