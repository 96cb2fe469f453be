//! Socket helpers: binding listeners and classifying accept errors.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

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
