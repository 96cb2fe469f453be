//! systemd service notifications (`sd_notify(3)`): when `NOTIFY_SOCKET` is
//! set (a unit with `Type=notify`), usher tells the service manager
//! `READY=1` once its listeners run, `STOPPING=1` when a stop signal
//! arrives, and `STATUS=…` lines along the way. `RELOADING=1` is for hot
//! reload (`ExecReload=kill -HUP`), which is not implemented yet.
//!
//! The protocol is one datagram of `KEY=VALUE` lines to a Unix socket,
//! which std does in safe code, abstract-namespace addresses (`@name`)
//! included; without `NOTIFY_SOCKET` every call does nothing.

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Sends notifications to the socket named by `NOTIFY_SOCKET`, if any.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    log: slog::Logger,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`. A variable that is set but unusable is logged
    /// once; usher runs on without notifications.
    pub fn from_env(log: slog::Logger) -> Notifier {
        let target = std::env::var_os("NOTIFY_SOCKET").and_then(|path| match Self::open(&path) {
            Ok(target) => Some(target),
            Err(err) => {
                slog::warn!(log, "cannot use NOTIFY_SOCKET; no systemd notifications";
                    "path" => path.to_string_lossy().into_owned(), "error" => %err);
                None
            }
        });
        Notifier { target, log }
    }

    fn open(path: &OsString) -> io::Result<(UnixDatagram, SocketAddr)> {
        let bytes = path.as_bytes();
        let addr = match bytes.strip_prefix(b"@") {
            Some(name) => abstract_address(name)?,
            None if bytes.starts_with(b"/") => SocketAddr::from_pathname(path)?,
            None => return Err(io::Error::new(io::ErrorKind::InvalidInput, "expected an absolute path or @name")),
        };
        Ok((UnixDatagram::unbound()?, addr))
    }

    /// Listeners run: `READY=1` and a status line.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={status}\n"));
    }

    /// A stop signal arrived: `STOPPING=1` and a status line.
    pub fn stopping(&self, status: &str) {
        self.send(&format!("STOPPING=1\nSTATUS={status}\n"));
    }

    /// A status line only.
    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={status}\n"));
    }

    /// Reload started (SIGHUP); `ready` again when it is done. `Type=notify`
    /// units need no `MONOTONIC_USEC` (only `Type=notify-reload` does).
    pub fn reloading(&self, status: &str) {
        self.send(&format!("RELOADING=1\nSTATUS={status}\n"));
    }

    fn send(&self, message: &str) {
        let Some((socket, addr)) = &self.target else { return };
        if let Err(err) = socket.send_to_addr(message.as_bytes(), addr) {
            slog::warn!(self.log, "systemd notification failed"; "error" => %err);
        }
    }
}

#[cfg(target_os = "linux")]
fn abstract_address(name: &[u8]) -> io::Result<SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name)
}

#[cfg(not(target_os = "linux"))]
fn abstract_address(_name: &[u8]) -> io::Result<SocketAddr> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "abstract socket addresses need Linux"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logger() -> slog::Logger {
        slog::Logger::root(slog::Discard, slog::o!())
    }

    fn receive(socket: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).expect("datagram");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn sends_states_to_a_path_socket() {
        let dir = std::env::temp_dir().join(format!("usher-sd-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).unwrap();
        socket.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        let (sender, addr) = Notifier::open(&path.clone().into_os_string()).unwrap();
        let notifier = Notifier { target: Some((sender, addr)), log: logger() };
        notifier.ready("serving 1 frontend");
        assert_eq!(receive(&socket), "READY=1\nSTATUS=serving 1 frontend\n");
        notifier.reloading("reloading");
        assert_eq!(receive(&socket), "RELOADING=1\nSTATUS=reloading\n");
        notifier.status("x");
        assert_eq!(receive(&socket), "STATUS=x\n");
        notifier.stopping("stopping");
        assert_eq!(receive(&socket), "STOPPING=1\nSTATUS=stopping\n");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("usher-sd-unit-{}", std::process::id());
        let socket = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
        socket.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        let target = Notifier::open(&format!("@{name}").into()).unwrap();
        let notifier = Notifier { target: Some(target), log: logger() };
        notifier.ready("up");
        assert_eq!(receive(&socket), "READY=1\nSTATUS=up\n");
    }

    #[test]
    fn relative_paths_are_refused_and_absence_is_silent() {
        assert!(Notifier::open(&"relative/notify".into()).is_err());
        let quiet = Notifier { target: None, log: logger() };
        assert!(quiet.target.is_none());
        quiet.ready("nobody listens");
    }
}
