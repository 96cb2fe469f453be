//! The pieces of the allocation-counting tests (`session_allocations.rs`,
//! `routing_cost.rs`) that must stay off the heap while a test binary
//! counts every allocation of its process: a blocking server and client,
//! one session at a time, and a log drain that only counts access records.
//! Each test binary keeps its own counting global allocator.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use slog::{Drain, OwnedKVList, Record};

use crate::DEADLINE;

/// The server's answer to every session.
pub const REPLY: usize = 64;

/// Counts access records ("session") and lets the test wait for a count,
/// without allocating.
#[derive(Clone, Default)]
pub struct SessionCounter(Arc<(Mutex<u64>, Condvar)>);

impl SessionCounter {
    pub fn wait_for(&self, want: u64) {
        let (count, changed) = &*self.0;
        let deadline = Instant::now() + DEADLINE;
        let mut done = count.lock().expect("counter");
        while *done < want {
            let left = deadline.checked_duration_since(Instant::now()).unwrap_or_else(|| {
                panic!("only {} of {want} sessions ended within {DEADLINE:?}", *done);
            });
            done = changed.wait_timeout(done, left).expect("counter").0;
        }
    }
}

impl Drain for SessionCounter {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record<'_>, _: &OwnedKVList) -> Result<(), slog::Never> {
        if record.msg().as_str() == Some("session") {
            let (count, changed) = &*self.0;
            *count.lock().expect("counter") += 1;
            changed.notify_all();
        }
        Ok(())
    }
}

/// A server that reads a `request_len`-byte request, answers [`REPLY`]
/// bytes and closes, one connection at a time (the client runs one session
/// at a time).
pub fn serve(listener: TcpListener, request_len: usize) {
    let mut request = vec![0u8; request_len];
    let reply = [b'r'; REPLY];
    while let Ok((mut stream, _)) = listener.accept() {
        if stream.read_exact(&mut request).is_ok() {
            let _ = stream.write_all(&reply);
        }
    }
}

/// One session through the broker: send `request`, read the reply to its
/// end, close.
pub fn session(broker: SocketAddr, request: &[u8]) {
    let mut stream = TcpStream::connect(broker).expect("connect to the broker");
    stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
    stream.write_all(request).expect("send the request");
    let mut reply = [0u8; REPLY + 1];
    let mut got = 0;
    loop {
        match stream.read(&mut reply[got..]).expect("read the reply") {
            0 => break,
            n => got += n,
        }
    }
    assert_eq!(got, REPLY, "the reply came whole, then the end");
    let _ = stream.shutdown(Shutdown::Both);
}
