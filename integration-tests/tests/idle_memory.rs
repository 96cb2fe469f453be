//! What a seated session that has gone quiet keeps on the broker's heap:
//! a long-lived idle connection (a pooled database or cache connection, a
//! websocket between messages) is where most of a busy proxy's sessions
//! sit, so its cost sets how many fit in memory. Counted by a global
//! allocator that keeps how many blocks of each size are live, so the test
//! prints what each idle session holds (the session task, the seated
//! phases, the sockets' registrations, …) and holds the total to a ceiling.
//!
//! The clients and the server are plain blocking sockets, their streams
//! kept in vectors reserved before counting: nothing of theirs is on this
//! process's heap, which the broker shares. This test binary counts every
//! allocation of the process, so it is alone in its file.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

use integration_tests::heap_by_size::{start_quiet_broker, LiveBySize};
use integration_tests::DEADLINE;

#[global_allocator]
static GLOBAL: LiveBySize = LiveBySize::new();

/// Sessions seated before counting: the first sessions' one-time
/// allocations (slabs, the server's first entries).
const WARM_UP: usize = 100;
/// Sessions counted.
const COUNTED: usize = 1_000;
/// Most heap bytes one idle session may hold (the test prints the figure).
const CEILING: f64 = 2_500.0;

/// A server that echoes each connection's first byte and then keeps the
/// connection open and silent.
fn echo_first_byte_and_hold(server: TcpListener, total: usize) {
    let mut held = Vec::with_capacity(total);
    for accepted in server.incoming().take(total) {
        let mut stream = accepted.expect("accept");
        stream.set_read_timeout(Some(DEADLINE)).expect("read timeout");
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).expect("the client's byte");
        stream.write_all(&byte).expect("echo");
        held.push(stream);
    }
    // Held until the test process ends.
    std::mem::forget(held);
}

/// A client whose byte came back: its session is seated and relaying.
fn seated_client(addr: std::net::SocketAddr) -> TcpStream {
    let mut client = TcpStream::connect(addr).expect("connect");
    // A session that is never seated fails the test instead of hanging it.
    client.set_read_timeout(Some(DEADLINE)).expect("read timeout");
    client.write_all(b"s").expect("write");
    let mut byte = [0u8; 1];
    client.read_exact(&mut byte).expect("seated and echoed");
    client
}

#[test]
fn an_idle_session_holds_little_heap() {
    let server = TcpListener::bind("127.0.0.1:0").expect("bind the server");
    let server_addr = server.local_addr().expect("server address");
    std::thread::spawn(move || echo_first_byte_and_hold(server, WARM_UP + COUNTED));
    let (_broker, addr) = start_quiet_broker(&format!(
        "[global]\nworkers = 1\n\
         [frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\nbacklog = 2048\n\
         [backends.app.servers.s1]\naddress = \"{server_addr}\"\n"
    ));
    let mut clients = Vec::with_capacity(WARM_UP + COUNTED);
    clients.extend((0..WARM_UP).map(|_| seated_client(addr)));
    let before = GLOBAL.snapshot();
    clients.extend((0..COUNTED).map(|_| seated_client(addr)));
    let bytes = GLOBAL.snapshot().per_session_since(&before, COUNTED, "idle session");
    assert!(bytes <= CEILING, "an idle session holds {bytes:.0} B of heap, more than {CEILING}");
}
