//! A TCP relay that a test can cut and heal: one usher instance reaches
//! etcd through it, so the test can take that instance off the network
//! while the others keep etcd. Cut, it resets every relayed connection and
//! closes each new one at once (as an unreachable peer's connections
//! fail); healed, it relays again on the same port.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Partition {
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    /// Bumped on every cut: relayed connections end when it changes.
    epoch: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Partition {
    /// Relays 127.0.0.1:PORT (the OS picks it) to `target`, on the current
    /// tokio runtime.
    pub fn start(target: SocketAddr) -> Partition {
        let std = crate::listener();
        let addr = std.local_addr().expect("addr");
        std.set_nonblocking(true).expect("nonblocking");
        let listener = TcpListener::from_std(std).expect("tokio listener");
        let cut = Arc::new(AtomicBool::new(false));
        let (epoch, _) = watch::channel(0);
        let task = tokio::spawn(relay(listener, target, cut.clone(), epoch.clone()));
        Partition { addr, cut, epoch, task }
    }

    /// `http://127.0.0.1:PORT`, as `cluster.etcd` takes it.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Ends every relayed connection and refuses service to new ones.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.epoch.send_modify(|e| *e += 1);
    }

    /// Relays new connections again.
    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}

async fn relay(listener: TcpListener, target: SocketAddr, cut: Arc<AtomicBool>, epoch: watch::Sender<u64>) {
    loop {
        let Ok((mut client, _)) = listener.accept().await else { continue };
        if cut.load(Ordering::SeqCst) {
            // Closed at once: the client sees its connection fail.
            reset(&client);
            continue;
        }
        let mut ended = epoch.subscribe();
        tokio::spawn(async move {
            let Ok(mut server) = TcpStream::connect(target).await else { return };
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                _ = ended.changed() => {
                    // Reset, not FIN: a cut network delivers no orderly close.
                    reset(&client);
                }
            }
        });
    }
}

/// Drops the connection with a reset when `stream` is closed.
fn reset(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(std::time::Duration::ZERO));
}
