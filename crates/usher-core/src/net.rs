//! Socket helpers: binding listeners, accepting, connecting to servers,
//! and classifying accept errors.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};

use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::io::Interest;

/// Binds a listening socket with `SO_REUSEADDR` and the given backlog
/// (the kernel caps it at `net.core.somaxconn`). Non-blocking, ready for the
/// accept loop.
pub fn bind_listener(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog.min(i32::MAX as u32) as i32)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Sets `TCP_NODELAY` on a listening socket. Linux copies it to every
/// socket the listener accepts (the accepted socket is cloned from the
/// listener's), so sessions get Nagle off without one `setsockopt` each.
pub fn set_nodelay_inherited(listener: &TcpListener) -> io::Result<()> {
    SockRef::from(listener).set_nodelay(true)
}

/// Sets `TCP_NODELAY` on one accepted client: only where its listener's
/// could not be set.
pub fn set_nodelay(stream: &TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)
}

/// Accepts one client as a non-blocking, close-on-exec socket, in the one
/// `accept4` call: an accepted socket does not inherit `O_NONBLOCK` from its
/// listener on Linux, and setting it afterwards (what `std`'s `accept` then
/// `set_nonblocking` do) costs every session one more system call.
pub fn accept_nonblocking(listener: &TcpListener) -> io::Result<(TcpStream, SocketAddr)> {
    let (socket, peer) = SockRef::from(listener).accept4(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)?;
    // A TCP listener's peers are IP addresses; anything else is an error
    // for the accept loop to report, not a reason to panic.
    let peer = peer.as_socket().ok_or_else(|| io::Error::other("accepted a client whose address is not IP"))?;
    Ok((socket.into(), peer))
}

/// Connects to a server with `TCP_NODELAY` set on the socket before the
/// SYN, in as few system calls as the kernel allows: `socket` (non-blocking
/// from the start), `setsockopt`, `connect`, and registration. Whether the
/// connection was refused comes from the socket's error readiness, which
/// epoll reports with its first event: tokio's `TcpStream::connect` (and
/// `TcpSocket::connect`) read `SO_ERROR` after every connect instead, one
/// `getsockopt` per session that says nothing the event did not. The
/// error itself is not read: a refusal, an unreachable host and a reset
/// right after the handshake all make the attempt a failed connect.
pub async fn connect_nodelay(address: SocketAddr) -> io::Result<tokio::net::TcpStream> {
    let socket = Socket::new(Domain::for_address(address), Type::STREAM.nonblocking(), None)?;
    socket.set_nodelay(true)?;
    match socket.connect(&address.into()) {
        Ok(()) => {}
        Err(err) if err.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(err) => return Err(err),
    }
    let stream = tokio::net::TcpStream::from_std(socket.into())?;
    let ready = stream.ready(Interest::WRITABLE | Interest::ERROR).await?;
    if ready.is_error() {
        return Err(io::Error::new(io::ErrorKind::ConnectionRefused, "the connection failed"));
    }
    Ok(stream)
}

/// What the accept loop does after an `accept()` error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptError {
    /// Nothing more in the backlog now.
    WouldBlock,
    /// ECONNABORTED, EINTR…: the next accept may succeed at once.
    Transient,
    /// EMFILE, ENFILE, ENOBUFS, ENOMEM: pause the listener, re-check later.
    Shortage(ShortageCause),
    /// Anything else: log it and pause briefly.
    Other,
}

/// The resource an `accept()` ran out of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShortageCause {
    /// EMFILE: the process's RLIMIT_NOFILE.
    ProcessFdLimit,
    /// ENFILE: the system-wide file table.
    SystemFdLimit,
    /// ENOBUFS, ENOMEM.
    Memory,
}

impl ShortageCause {
    /// The resource's name in the logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ShortageCause::ProcessFdLimit => "process fd limit",
            ShortageCause::SystemFdLimit => "system fd limit",
            ShortageCause::Memory => "memory",
        }
    }
}

impl std::fmt::Display for ShortageCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

pub fn classify_accept_error(err: &io::Error) -> AcceptError {
    if err.kind() == io::ErrorKind::WouldBlock {
        return AcceptError::WouldBlock;
    }
    match err.raw_os_error() {
        Some(libc::ECONNABORTED | libc::EINTR | libc::EPROTO | libc::ECONNRESET) => AcceptError::Transient,
        Some(libc::EMFILE) => AcceptError::Shortage(ShortageCause::ProcessFdLimit),
        Some(libc::ENFILE) => AcceptError::Shortage(ShortageCause::SystemFdLimit),
        Some(libc::ENOBUFS | libc::ENOMEM) => AcceptError::Shortage(ShortageCause::Memory),
        _ if err.kind() == io::ErrorKind::Interrupted => AcceptError::Transient,
        _ => AcceptError::Other,
    }
}

/// Helpers the unit tests of several modules share.
#[cfg(test)]
pub(crate) mod test_support {
    use tokio::net::{TcpListener, TcpStream};

    /// Two ends of one TCP connection on 127.0.0.1: the connecting one
    /// first, then the accepted one.
    pub(crate) async fn connected_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let near = TcpStream::connect(listener.local_addr().expect("address")).await.expect("connect");
        let (far, _) = listener.accept().await.expect("accept");
        (near, far)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// Accepts the one client `listener` has, waiting for it with a deadline
    /// (the listener is non-blocking).
    fn accept_one(listener: &TcpListener) -> (TcpStream, SocketAddr) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match accept_nonblocking(listener) {
                Ok(pair) => return pair,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock && std::time::Instant::now() < deadline => {
                    std::thread::yield_now()
                }
                Err(err) => panic!("accept: {err}"),
            }
        }
    }

    #[tokio::test]
    async fn connect_nodelay_connects_with_nagle_off_or_reports_the_failure() {
        let listener = bind_listener("127.0.0.1:0".parse().unwrap(), 8).expect("bind");
        let address = listener.local_addr().unwrap();
        let deadline = std::time::Duration::from_secs(10);
        let stream = tokio::time::timeout(deadline, connect_nodelay(address)).await.expect("in time").expect("connect");
        assert!(stream.nodelay().expect("TCP_NODELAY"), "the server socket has Nagle on");
        let (accepted, peer) = accept_one(&listener);
        assert_eq!(peer, stream.local_addr().unwrap());
        drop(accepted);
        // The port closes: a connect to it now is refused, and says so.
        drop(listener);
        let refused = tokio::time::timeout(deadline, connect_nodelay(address)).await.expect("in time");
        assert!(refused.is_err(), "a connect to a closed port succeeded");
    }

    /// What the accept loop relies on to make no `setsockopt` per session.
    #[test]
    fn accepted_sockets_inherit_the_listeners_nodelay() {
        let listener = bind_listener("127.0.0.1:0".parse().unwrap(), 8).expect("bind");
        set_nodelay_inherited(&listener).expect("TCP_NODELAY on the listener");
        let _client = TcpStream::connect(listener.local_addr().unwrap()).expect("connect");
        let (accepted, _) = accept_one(&listener);
        assert!(accepted.nodelay().expect("TCP_NODELAY"), "the accepted socket did not inherit TCP_NODELAY");
    }

    #[test]
    fn accepted_sockets_are_non_blocking() {
        let listener = bind_listener("127.0.0.1:0".parse().unwrap(), 8).expect("bind");
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).expect("connect");
        let (mut accepted, peer) = accept_one(&listener);
        assert_eq!(peer, client.local_addr().unwrap());
        assert!(!accepted.nodelay().expect("TCP_NODELAY"), "Nagle is on unless the listener turned it off");
        assert!(SockRef::from(&accepted).nonblocking().expect("flags"), "accepted socket is blocking");
        // Nothing sent yet: a non-blocking read says so at once.
        let mut byte = [0u8; 1];
        assert_eq!(accepted.read(&mut byte).map_err(|e| e.kind()), Err(io::ErrorKind::WouldBlock));
        client.write_all(b"x").expect("write");
    }

    #[test]
    fn accept_errors_are_classified() {
        let os = io::Error::from_raw_os_error;
        assert_eq!(classify_accept_error(&os(libc::EMFILE)), AcceptError::Shortage(ShortageCause::ProcessFdLimit));
        assert_eq!(classify_accept_error(&os(libc::ENFILE)), AcceptError::Shortage(ShortageCause::SystemFdLimit));
        assert_eq!(classify_accept_error(&os(libc::ENOMEM)), AcceptError::Shortage(ShortageCause::Memory));
        assert_eq!(classify_accept_error(&os(libc::ECONNABORTED)), AcceptError::Transient);
        assert_eq!(classify_accept_error(&os(libc::EINTR)), AcceptError::Transient);
        assert_eq!(classify_accept_error(&os(libc::EAGAIN)), AcceptError::WouldBlock);
        assert_eq!(classify_accept_error(&os(libc::EBADF)), AcceptError::Other);
    }
}
