//! Socket helpers: binding listeners, accepting, and classifying accept
//! errors.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};

use socket2::{Domain, Protocol, SockRef, Socket, Type};

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
