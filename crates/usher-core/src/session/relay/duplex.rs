//! Byte-exact relay between client and server.
//!
//! Both directions run in the session's own task. A FIN read on one side is
//! passed on as a write shutdown to the other, and the other direction
//! carries on (half-close). A side is idle when nothing was read from it or
//! written to it for its timeout (`timeout.client`, `timeout.server`); the
//! first side to go idle ends the session.
//!
//! Two limits end a session whatever it does: its own `timeout.session_max`
//! deadline, and at stop its turn in `global.close_spread` (the kill heard,
//! it relays on for its close delay). Both share the idle timer, so they
//! cost the session's future no timer of their own.

use std::future::{poll_fn, Future};
use std::io;
use std::mem::MaybeUninit;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;

use socket2::SockRef;
use tokio::io::{AsyncRead, AsyncWriteExt, Interest, ReadBuf};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy)]
pub struct RelayLimits {
    /// `timeout.client`, if any.
    pub client_idle: Option<Duration>,
    /// `timeout.server`, if any.
    pub server_idle: Option<Duration>,
    /// First bulk buffer of a direction.
    pub bufsize: usize,
    /// Most a bulk buffer grows to while reads keep filling it.
    pub bufsize_max: usize,
}

/// The ends that come whatever the session does. Boxed, and only for a
/// session that has one (`timeout.session_max` or `global.close_spread`
/// set): the relay future of a session without either stays as small as
/// before (under tokio's threshold for boxing a spawned future).
#[derive(Debug)]
pub struct FixedEnds<'a> {
    /// The end armed now, and why: `timeout.session_max`, or the session's
    /// turn in the close spread once the kill at stop was heard.
    pub next: Option<(Instant, RelayEnd)>,
    /// At stop, how long after the kill the session still relays: its
    /// share of `global.close_spread` (`None` = it closes at once).
    pub close_delay: Option<Duration>,
    /// The broker's kill token: only a kill at stop waits for the delay (an
    /// operator's shutdown of a server's sessions closes at once).
    pub stop: &'a CancellationToken,
    /// The server's operator shutdown (`AD`), heard while the session waits
    /// its turn in the close spread: the kill token it relays on was
    /// already cancelled by the stop, so that one cannot tell it.
    pub shut_down: &'a CancellationToken,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayEnd {
    /// Both directions finished with a FIN.
    Done,
    ClientReset,
    ServerReset,
    ClientIdle,
    ServerIdle,
    Killed,
    /// An operator shut down its server's sessions while it waited its
    /// turn in the close spread.
    ShutDown,
    /// Outlived `timeout.session_max`.
    SessionMax,
}

#[derive(Debug)]
pub struct RelayOutcome {
    pub end: RelayEnd,
    pub from_client: u64,
    pub from_server: u64,
}

enum PumpError {
    Read,
    Write,
}

/// Which way a pump copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    ClientToServer,
    ServerToClient,
}

/// What both pumps of a session share (one task polls both, so plain
/// relaxed atomics suffice: they only make the shared state `Sync`).
struct Shared {
    /// Start of the relay; activity is kept in ms since then.
    start: Instant,
    /// Last time anything was read from or written to each side.
    client_seen: AtomicU64,
    server_seen: AtomicU64,
    /// Bytes copied, and whether the reading side sent its FIN, per direction.
    bytes: [AtomicU64; 2],
    eof: [AtomicBool; 2],
}

impl Shared {
    fn new() -> Shared {
        Shared {
            start: Instant::now(),
            client_seen: AtomicU64::new(0),
            server_seen: AtomicU64::new(0),
            bytes: [AtomicU64::new(0), AtomicU64::new(0)],
            eof: [AtomicBool::new(false), AtomicBool::new(false)],
        }
    }

    fn touch(&self, side: &AtomicU64) -> u64 {
        let at = self.start.elapsed().as_millis() as u64;
        side.store(at, Ordering::Relaxed);
        at
    }

    /// When `side` goes idle under `timeout`. A deadline the clock cannot
    /// hold (a timeout of centuries, set in code past the configuration's
    /// bound) is no deadline: the session must not panic on it.
    fn idle_deadline(&self, side: &AtomicU64, timeout: Option<Duration>) -> Option<Instant> {
        let seen = Duration::from_millis(side.load(Ordering::Relaxed));
        self.start.checked_add(seen)?.checked_add(timeout?)
    }

    /// (side read from, side written to, index of the direction)
    fn sides(&self, direction: Direction) -> (&AtomicU64, &AtomicU64, usize) {
        match direction {
            Direction::ClientToServer => (&self.client_seen, &self.server_seen, 0),
            Direction::ServerToClient => (&self.server_seen, &self.client_seen, 1),
        }
    }
}

/// Bytes read on the stack before a heap buffer is taken.
const SMALL_READ: usize = 2048;

/// What one small read did.
enum Small {
    Eof,
    /// `n` bytes read; `rest` is what the writer did not take at once.
    Read {
        n: usize,
        filled: bool,
        rest: Option<Vec<u8>>,
        then: AfterRead,
    },
}

/// What the reading side was found to hold after a small read's bytes.
enum AfterRead {
    /// Not looked at: the pump reads on.
    Unknown,
    /// Its FIN (already read): the pump passes it on at once.
    Eof,
    /// An error (a reset after the FIN), which the read reported once.
    Failed,
}

/// One read into a stack array, written straight on when the writer takes
/// it. The array lives only inside this poll, so it is not part of the
/// session's future: an idle session holds no relay buffer at all, and a
/// small message (keepalive ping-pong) costs no allocation.
///
/// When the reading side's FIN is already in (tokio saw its `EPOLLRDHUP`
/// before the read) and the read was short, the read that finds the EOF
/// is made at once, and the bytes are sent with `MSG_MORE`: the write
/// shutdown that follows then leaves in the same segment as them. A reply
/// and its close cost the client one segment and one acknowledgement
/// fewer (HAProxy merges them the same way); the system calls are the
/// ones the loop would have made anyway.
fn poll_small(cx: &mut Context<'_>, from: &mut ReadHalf<'_>, to: &TcpStream) -> Poll<Result<Small, PumpError>> {
    // Readiness first, so that the FIN is known to have come before the
    // read (then a short read drained the socket up to it). Pending here
    // registers the waker exactly as the read would.
    ready!(from.as_ref().poll_read_ready(cx)).map_err(|_| PumpError::Read)?;
    let fin_in = peer_fin_seen(from.as_ref());
    // Uninitialised: the pump is polled on every wake of the session, and
    // zeroing 2 KiB each time would be wasted.
    let mut small = [MaybeUninit::<u8>::uninit(); SMALL_READ];
    let mut read = ReadBuf::uninit(&mut small);
    // poll_read (unlike try_read) treats a short read as "drained", which
    // saves the read that would only return EAGAIN.
    ready!(Pin::new(&mut *from).poll_read(cx, &mut read)).map_err(|_| PumpError::Read)?;
    let data = read.filled();
    let n = data.len();
    if n == 0 {
        return Poll::Ready(Ok(Small::Eof));
    }
    // After a FIN no read blocks. A short read can still stop before it
    // (at an urgent mark): what the probe finds then is relayed after the
    // data. An error (a reset) is reported by a read only once, so the
    // probe's is kept for after the data.
    let mut probe = [0u8; 1];
    let (then, extra) = if fin_in && n < SMALL_READ {
        match from.as_ref().try_read(&mut probe) {
            Ok(0) => (AfterRead::Eof, 0),
            Ok(more) => (AfterRead::Unknown, more),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => (AfterRead::Unknown, 0),
            Err(_) => (AfterRead::Failed, 0),
        }
    } else {
        (AfterRead::Unknown, 0)
    };
    let sent = if matches!(then, AfterRead::Eof) {
        to.try_io(Interest::WRITABLE, || SockRef::from(to).send_with_flags(data, libc::MSG_MORE))
    } else {
        to.try_write(data)
    };
    let written = match sent {
        Ok(written) => written,
        Err(err) if err.kind() == io::ErrorKind::WouldBlock => 0,
        Err(_) => return Poll::Ready(Err(PumpError::Write)),
    };
    let rest = (written < n || extra > 0).then(|| [&data[written..], &probe[..extra]].concat());
    Poll::Ready(Ok(Small::Read { n: n + extra, filled: n == SMALL_READ, rest, then }))
}

/// Whether tokio has seen the peer's FIN on `socket`, without waiting for
/// anything. Called while the socket is readable, when tokio answers from
/// its readiness word alone (no waiter is registered).
fn peer_fin_seen(socket: &TcpStream) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    let ready = pin!(socket.ready(Interest::READABLE));
    matches!(ready.poll(&mut cx), Poll::Ready(Ok(ready)) if ready.is_read_closed())
}

/// Copies one direction until EOF (then half-closes `to`) or an error.
///
/// Reads go first into a small stack array (see [`poll_small`]): that is
/// all an interactive session ever uses, with no allocation and no extra
/// `recv`. A read that fills it means bulk: the pump takes a `bufsize` heap
/// buffer and reads without waiting (`try_read_buf`) while data is there,
/// doubling the buffer up to `bufsize_max` each time a read fills it. The
/// first read that would block frees the buffer and the pump goes back to
/// waiting with none, so a session holds a relay buffer only while bytes
/// flow, and an idle one holds none.
async fn pump(
    mut from: ReadHalf<'_>,
    mut to: WriteHalf<'_>,
    limits: &RelayLimits,
    shared: &Shared,
    direction: Direction,
) -> Result<(), PumpError> {
    let (read_side, write_side, index) = shared.sides(direction);
    let first_bulk = limits.bufsize.max(SMALL_READ);
    loop {
        // Bound before the match: a scrutinee's temporaries (the `?`'s
        // included) would live across the awaits in its arms, in every
        // idle session's relay.
        let small = poll_fn(|cx| poll_small(cx, &mut from, to.as_ref())).await?;
        let n = match small {
            Small::Eof => 0,
            Small::Read { n, filled, rest, then } => {
                let at = shared.touch(read_side);
                if let Some(rest) = rest {
                    // Boxed: a write the socket could not take at once is
                    // rare, and its state would otherwise be part of the
                    // pump's size.
                    Box::pin(write_rest(&mut to, rest)).await?;
                    shared.touch(write_side);
                } else {
                    // Written at once: one clock read serves both sides
                    // (it is a measurable share of a small round trip).
                    write_side.store(at, Ordering::Relaxed);
                }
                shared.bytes[index].fetch_add(n as u64, Ordering::Relaxed);
                match then {
                    AfterRead::Eof => 0,
                    AfterRead::Failed => return Err(PumpError::Read),
                    AfterRead::Unknown if filled => {
                        // Boxed: the bulk copy's state is the largest a pump
                        // has and is needed only while a transfer fills
                        // reads; inline, every idle session would carry it
                        // twice (one pump each way). The box comes with the
                        // bulk buffer, so small exchanges never allocate it.
                        Box::pin(bulk(&mut from, &mut to, first_bulk, limits.bufsize_max, shared, direction)).await?
                    }
                    AfterRead::Unknown => n,
                }
            }
        };
        if n == 0 {
            shared.touch(read_side);
            shared.eof[index].store(true, Ordering::Relaxed);
            if shared.eof[1 - index].load(Ordering::Relaxed) {
                // The other way is finished too: `to` has nothing left to
                // read, so closing it (when the session ends, at once) sends
                // the FIN without a `shutdown` call of its own.
                return Ok(());
            }
            return match to.shutdown().await {
                Ok(()) => Ok(()),
                Err(err) if err.kind() == io::ErrorKind::NotConnected => Ok(()),
                Err(_) => Err(PumpError::Write),
            };
        }
    }
}

/// Writes what a small read left over once the socket takes it.
async fn write_rest(to: &mut WriteHalf<'_>, rest: Vec<u8>) -> Result<(), PumpError> {
    to.write_all(&rest).await.map_err(|_| PumpError::Write)
}

/// Copies while the socket has data, through a heap buffer that grows from
/// `size` to `max` while reads fill it. Returns 0 at EOF, or a non-zero
/// count once the socket is drained (the buffer is freed on return).
async fn bulk(
    from: &mut ReadHalf<'_>,
    to: &mut WriteHalf<'_>,
    mut size: usize,
    max: usize,
    shared: &Shared,
    direction: Direction,
) -> Result<usize, PumpError> {
    let (read_side, write_side, index) = shared.sides(direction);
    let source: &TcpStream = from.as_ref();
    let mut buf = Vec::with_capacity(size);
    loop {
        buf.clear();
        let n = match source.try_read_buf(&mut buf) {
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(1),
            Err(_) => return Err(PumpError::Read),
        };
        if n == 0 {
            return Ok(0);
        }
        shared.touch(read_side);
        to.write_all(&buf).await.map_err(|_| PumpError::Write)?;
        shared.touch(write_side);
        shared.bytes[index].fetch_add(n as u64, Ordering::Relaxed);
        if n == size && size < max {
            size = (size * 2).min(max);
            buf = Vec::with_capacity(size);
        }
    }
}

/// Relays until both directions are finished, a side resets or idles, one
/// of the `fixed` ends comes, or `kill` fires — then at once, unless the
/// kill was the stop's and the session has a close delay. `client_done`
/// means the client already half-closed (its FIN is passed on to the
/// server first).
pub async fn relay(
    client: &mut TcpStream,
    server: &mut TcpStream,
    client_done: bool,
    // By reference: an argument taken by value is stored twice in the
    // future (as the argument, and as the local it becomes).
    limits: &RelayLimits,
    kill: &CancellationToken,
    mut fixed: Option<Box<FixedEnds<'_>>>,
) -> RelayOutcome {
    let shared = Shared::new();
    let (cr, cw) = client.split();
    let (sr, mut sw) = server.split();

    let mut c2s_done = client_done;
    if client_done {
        if sw.shutdown().await.is_err() {
            return RelayOutcome { end: RelayEnd::ServerReset, from_client: 0, from_server: 0 };
        }
        shared.eof[0].store(true, Ordering::Relaxed);
    }
    let c2s = pump(cr, sw, limits, &shared, Direction::ClientToServer);
    let s2c = pump(sr, cw, limits, &shared, Direction::ServerToClient);
    // The kill until it is heard; then, while the session waits its turn
    // in the close spread, its server's operator shutdown (see
    // FixedEnds). Never both at once, so one future serves for both.
    let stop_or_shut_down = kill.cancelled();
    let mut kill_heard = false;
    let mut spreading = false;
    // One timer for the session, armed at the earliest deadline and moved
    // only when it fires: activity only moves idle deadlines later, so a
    // timer that fires early just re-reads them.
    let next_deadline = |fixed: Option<&FixedEnds<'_>>| {
        let client = shared.idle_deadline(&shared.client_seen, limits.client_idle);
        let server = shared.idle_deadline(&shared.server_seen, limits.server_idle);
        let fixed = fixed.and_then(|f| f.next).map(|(at, _)| at);
        [client, server, fixed].into_iter().flatten().min()
    };
    // Whether the timer is armed: its deadline is kept by the timer alone,
    // and the first one is scoped to this block, so that neither takes room
    // in the relay's future (which holds its live locals across awaits).
    let (mut armed, idle) = {
        let first = next_deadline(fixed.as_deref());
        (first.is_some(), sleep_until(first.unwrap_or_else(Instant::now)))
    };
    tokio::pin!(c2s, s2c, stop_or_shut_down, idle);
    let mut s2c_done = false;

    let end = loop {
        if c2s_done && s2c_done {
            break RelayEnd::Done;
        }
        tokio::select! {
            biased;
            r = &mut c2s, if !c2s_done => match r {
                Ok(()) => c2s_done = true,
                Err(PumpError::Read) => break RelayEnd::ClientReset,
                Err(PumpError::Write) => break RelayEnd::ServerReset,
            },
            r = &mut s2c, if !s2c_done => match r {
                Ok(()) => s2c_done = true,
                Err(PumpError::Read) => break RelayEnd::ServerReset,
                Err(PumpError::Write) => break RelayEnd::ClientReset,
            },
            () = &mut idle, if armed => {
                let now = Instant::now();
                if let Some((_, why)) = fixed.as_ref().and_then(|f| f.next).filter(|(at, _)| *at <= now) {
                    break why;
                }
                if shared.idle_deadline(&shared.client_seen, limits.client_idle).is_some_and(|d| d <= now) {
                    break RelayEnd::ClientIdle;
                }
                if shared.idle_deadline(&shared.server_seen, limits.server_idle).is_some_and(|d| d <= now) {
                    break RelayEnd::ServerIdle;
                }
                let next = next_deadline(fixed.as_deref());
                armed = next.is_some();
                if let Some(deadline) = next {
                    idle.as_mut().reset(deadline);
                }
            },
            () = &mut stop_or_shut_down, if !kill_heard || spreading => {
                if spreading {
                    break RelayEnd::ShutDown;
                }
                kill_heard = true;
                let Some(ends) = fixed.as_mut() else { break RelayEnd::Killed };
                let delay = ends.close_delay.filter(|_| ends.stop.is_cancelled());
                let Some(close_at) = delay.and_then(|delay| Instant::now().checked_add(delay)) else {
                    break RelayEnd::Killed;
                };
                if ends.next.is_none_or(|(at, _)| close_at < at) {
                    ends.next = Some((close_at, RelayEnd::Killed));
                }
                spreading = true;
                let shut_down = ends.shut_down;
                stop_or_shut_down.set(shut_down.cancelled());
                let next = next_deadline(fixed.as_deref());
                armed = next.is_some();
                if let Some(deadline) = next {
                    idle.as_mut().reset(deadline);
                }
            },
        }
    };
    RelayOutcome {
        end,
        from_client: shared.bytes[0].load(Ordering::Relaxed),
        from_server: shared.bytes[1].load(Ordering::Relaxed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use crate::net::test_support::connected_pair as pair;

    /// A small read whose write the other socket takes only partly (here:
    /// not at all, its send buffer is full) is finished later, byte for
    /// byte, in order. Filling the buffer races with the last
    /// acknowledgements of what is in flight, so a run may find room after
    /// all; it then passes without exercising the rest, never fails.
    #[tokio::test]
    async fn a_small_read_the_writer_cannot_take_at_once_is_written_whole_and_in_order() {
        let (mut client, mut from) = pair().await;
        let (mut to, mut reader) = pair().await;
        // Nobody reads `reader` yet: fill `to` until it takes nothing more.
        let mut filled = 0usize;
        let block = [0xAAu8; 64 * 1024];
        loop {
            match to.try_write(&block) {
                Ok(n) => filled += n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) => panic!("fill: {err}"),
            }
        }
        // A message under the small read's size, then the client's FIN.
        let message: Vec<u8> = (0..1500u32).map(|i| (i % 251) as u8).collect();
        client.write_all(&message).await.expect("write");
        client.shutdown().await.expect("half-close");

        let (from_read, _) = from.split();
        let (_, to_write) = to.split();
        let limits = RelayLimits { client_idle: None, server_idle: None, bufsize: 4096, bufsize_max: 4096 };
        let shared = Shared::new();
        let copy = pump(from_read, to_write, &limits, &shared, Direction::ClientToServer);
        let mut received = Vec::new();
        let read_all = reader.read_to_end(&mut received);
        let (copied, read) = tokio::time::timeout(Duration::from_secs(30), async { tokio::join!(copy, read_all) })
            .await
            .expect("relayed within 30 s");
        assert!(copied.is_ok(), "the pump failed");
        read.expect("read");
        assert_eq!(received.len(), filled + message.len(), "every byte, once");
        assert!(received[..filled].iter().all(|&b| b == 0xAA));
        assert!(received[filled..] == message[..], "the message came whole and after the filler");
    }

    /// Waits until tokio has seen the peer's FIN on `socket`, so that the
    /// pump's first read finds it already in.
    async fn fin_seen_by_tokio(socket: &TcpStream) {
        let wait = async {
            loop {
                let ready = socket.ready(Interest::READABLE).await.expect("ready");
                if ready.is_read_closed() {
                    return;
                }
                // Forget this readiness: the FIN's own event wakes the next wait.
                let _ = socket.try_io(Interest::READABLE, || Err::<(), _>(io::ErrorKind::WouldBlock.into()));
            }
        };
        tokio::time::timeout(Duration::from_secs(30), wait).await.expect("the FIN within 30 s");
    }

    /// Lets `server` send and end its side (it gets the socket, and drops
    /// it when done), waits until tokio has seen that end, then runs one
    /// pump from it to a client reader (small messages: the pump never
    /// waits for the reader). Returns whether the pump ended without an
    /// error, and what the reader got up to its EOF.
    async fn relayed(server: impl AsyncFnOnce(TcpStream)) -> (bool, Vec<u8>) {
        let (near, mut from) = pair().await;
        let (mut to, mut reader) = pair().await;
        server(near).await;
        fin_seen_by_tokio(&from).await;
        let limits = RelayLimits { client_idle: None, server_idle: None, bufsize: 4096, bufsize_max: 4096 };
        let shared = Shared::new();
        let copy = pump(from.split().0, to.split().1, &limits, &shared, Direction::ServerToClient);
        let copied = tokio::time::timeout(Duration::from_secs(30), copy).await.expect("pumped within 30 s").is_ok();
        if !copied {
            // What the session's end does on a failed pump: close `to`.
            to.shutdown().await.expect("close");
        }
        let mut received = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(30), reader.read_to_end(&mut received));
        read.await.expect("read within 30 s").expect("read");
        (copied, received)
    }

    /// A reply whose FIN is already in when it is read leaves with the FIN
    /// (sent with MSG_MORE, then the write shutdown): whole, then the EOF.
    #[tokio::test]
    async fn a_reply_read_with_its_fin_is_relayed_whole_then_half_closed() {
        let reply: Vec<u8> = (0..700u32).map(|i| (i % 251) as u8).collect();
        let sent = reply.clone();
        let got = relayed(async move |mut server: TcpStream| {
            server.write_all(&sent).await.expect("write");
            server.shutdown().await.expect("half-close");
        });
        assert_eq!(got.await, (true, reply));
    }

    /// A short read can stop before the FIN at an urgent mark: what comes
    /// after it is relayed too, in order, and only then the EOF. (The
    /// urgent byte itself is out of band and not part of the stream.)
    #[tokio::test]
    async fn bytes_after_an_urgent_mark_before_the_fin_are_relayed_too() {
        let got = relayed(async |mut server: TcpStream| {
            server.write_all(b"before the mark, ").await.expect("write");
            SockRef::from(&server).send_out_of_band(b"!").expect("urgent byte");
            server.write_all(b"after the mark").await.expect("write");
            server.shutdown().await.expect("half-close");
        });
        assert_eq!(got.await, (true, b"before the mark, after the mark".to_vec()));
    }

    /// A reset right after a reply: the reply is relayed, then the pump
    /// fails as the read that finds the reset would (the reset is reported
    /// once, so finding it early must not lose it).
    #[tokio::test]
    async fn a_reset_after_a_reply_is_reported_after_the_reply() {
        let got = relayed(async |mut server: TcpStream| {
            server.write_all(b"the reply").await.expect("write");
            SockRef::from(&server).set_linger(Some(Duration::ZERO)).expect("linger 0");
        });
        assert_eq!(got.await, (false, b"the reply".to_vec()));
    }

    #[test]
    fn an_idle_timeout_the_clock_cannot_hold_is_no_deadline() {
        let shared = Shared::new();
        assert_eq!(shared.idle_deadline(&shared.server_seen, Some(Duration::MAX)), None);
        shared.touch(&shared.client_seen);
        assert_eq!(shared.idle_deadline(&shared.client_seen, Some(Duration::MAX)), None);
        assert_eq!(shared.idle_deadline(&shared.server_seen, None), None);
        let second = Duration::from_secs(1);
        assert_eq!(shared.idle_deadline(&shared.server_seen, Some(second)), Some(shared.start + second));
    }
}

