//! The relay holds a bulk buffer only while data is in flight: once a bulk
//! transfer drains, a session that stays open and quiet holds no relay
//! buffer (what the bench's `idle` case sees as RSS per connection).
//!
//! This test binary counts every heap byte of the process (the broker runs
//! in process), so it is alone in its file: other tests would allocate
//! meanwhile.

use std::alloc::System;
use std::time::Duration;

use cap::Cap;
use integration_tests::{Behavior, TestBackend, TestBroker, DEADLINE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

#[global_allocator]
static ALLOCATOR: Cap<System> = Cap::new(System, usize::MAX);

/// Largest a bulk buffer grows to here: big, so one kept by mistake stands
/// out from anything else the process allocates meanwhile.
const BUFSIZE_MAX: usize = 1 << 20;
/// Bytes sent through, each way.
const TRANSFER: usize = 8 << 20;
/// Heap the process may hold after the transfer beyond what it held before
/// (tokio and the test's own bookkeeping), well under one bulk buffer.
const SLACK: usize = 256 << 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_session_frees_its_bulk_buffers() {
    let server = TestBackend::start(Behavior::Echo);
    let broker = TestBroker::start(&format!(
        "[global]\nbufsize_max = {BUFSIZE_MAX}\n\
         [frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n\
         [backends.app.servers.s1]\naddress = \"{}\"\n",
        server.addr
    ));
    let data: Vec<u8> = (0..TRANSFER).map(|i| (i % 251) as u8).collect();
    let mut back = vec![0u8; TRANSFER];

    // The session is seated and relaying before the baseline is taken.
    let mut stream = TcpStream::connect(broker.addr("web")).await.expect("connect");
    stream.write_all(b"x").await.expect("write");
    let mut one = [0u8; 1];
    tokio::time::timeout(DEADLINE, stream.read_exact(&mut one)).await.expect("in time").expect("echo");
    let baseline = ALLOCATOR.allocated();

    // Both ways at once: the echo server's reply flows while the client
    // still sends. The peak shows the buffers did grow.
    let (mut rd, mut wr) = stream.split();
    let mut peak = baseline;
    let transfer = async {
        let write = wr.write_all(&data);
        let read = async {
            let mut got = 0;
            while got < TRANSFER {
                let n = rd.read(&mut back[got..]).await.expect("read");
                assert!(n > 0, "the session closed after {got} bytes");
                got += n;
                peak = peak.max(ALLOCATOR.allocated());
            }
        };
        let (written, ()) = tokio::join!(write, read);
        written.expect("write");
    };
    tokio::time::timeout(DEADLINE, transfer).await.expect("transfer in time");
    assert!(back == data, "echoed bytes differ");
    assert!(
        peak >= baseline + BUFSIZE_MAX / 2,
        "the relay's buffers never grew (peak {peak}, baseline {baseline}): this test would prove nothing"
    );

    // Drained and quiet: the buffers go back. Nothing signals the free, so
    // the heap is polled, with a deadline.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let now = ALLOCATOR.allocated();
        if now < baseline + SLACK {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "an open, quiet session still holds {} bytes more than before its bulk transfer",
            now - baseline
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(broker.logs.sessions().is_empty(), "the session must still be open while its memory is measured");
    drop(stream);
}
