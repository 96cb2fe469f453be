//! Built-in demo servers for `usher demo`.
//!
//! Each takes its time so that queueing shows: an HTTP request (curl) is
//! answered after [`WORK`]; a raw TCP client (nc) is greeted, gets its lines
//! echoed, and is let go after [`HOLD`].

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{timeout, Instant};

/// Simulated work per HTTP request.
pub const WORK: Duration = Duration::from_secs(2);
/// How long a raw TCP client may keep its seat.
pub const HOLD: Duration = Duration::from_secs(15);

pub async fn serve(name: String, listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        actix_rt::spawn(handle(name.clone(), stream));
    }
}

async fn handle(name: String, mut stream: TcpStream) {
    let seated = Instant::now();
    let mut first = vec![0u8; 4096];
    let n = timeout(Duration::from_millis(300), stream.read(&mut first)).await.ok().and_then(Result::ok).unwrap_or(0);
    let is_http = [b"GET ".as_slice(), b"HEAD", b"POST", b"PUT "].iter().any(|m| first[..n].starts_with(m));
    if is_http {
        tokio::time::sleep(WORK).await;
        let body = format!("served by {name} after {:.1}s of work\n", seated.elapsed().as_secs_f64());
        let reply = format!(
            "HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(reply.as_bytes()).await;
        return;
    }
    let greeting = format!("hello from {name}: you have a seat for {}s; type a line, it comes back\n", HOLD.as_secs());
    if stream.write_all(greeting.as_bytes()).await.is_err() || stream.write_all(&first[..n]).await.is_err() {
        return;
    }
    let _ = timeout(HOLD, async {
        let mut buf = vec![0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if stream.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
    })
    .await;
    let _ = stream.write_all(b"time is up, seat released\n").await;
}

/// What to try, printed at start.
pub fn instructions(frontend: SocketAddr) -> String {
    let port = frontend.port();
    format!(
        "\nusher demo is up: frontend {frontend} -> 2 demo servers with 2 seats each.\n\
         Try, in another terminal:\n\
         \x20 curl -s http://127.0.0.1:{port}/                      # one request, served in ~2s\n\
         \x20 for i in $(seq 8); do curl -s http://127.0.0.1:{port}/ & done; wait\n\
         \x20                                                      # 4 seated at once, 4 queue ~2s more\n\
         \x20 nc 127.0.0.1 {port}                                   # hold a seat for 15s; open 5 to see one wait\n\
         Watch the access records below: queue_ms, backend_queue_pos, server, termination.\n\
         Stop with Ctrl-C.\n"
    )
}
