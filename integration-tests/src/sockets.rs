//! What the kernel says about this process's TCP sockets (Linux `/proc`):
//! readiness signals a test can wait on instead of sleeping — how many bytes
//! the broker has not read yet from a connection, how many fds it still
//! holds on a port.

use std::collections::HashSet;

/// One IPv4 TCP socket of `/proc/net/tcp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpEntry {
    pub local_port: u16,
    pub remote_port: u16,
    /// Kernel state (`01` established, `0A` listening, …).
    pub state: u8,
    /// Bytes received and not yet read by the socket's owner.
    pub rx_queue: u64,
    /// 0 once no fd holds the socket (closing, `TIME_WAIT`).
    pub inode: u64,
}

/// Every IPv4 TCP socket of this network namespace.
pub fn tcp_entries() -> Vec<TcpEntry> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    table.lines().skip(1).filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<TcpEntry> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let port = |address: &str| u16::from_str_radix(address.rsplit(':').next()?, 16).ok();
    let (_, rx_queue) = fields.get(4)?.split_once(':')?;
    Some(TcpEntry {
        local_port: port(fields.get(1)?)?,
        remote_port: port(fields.get(2)?)?,
        state: u8::from_str_radix(fields.get(3)?, 16).ok()?,
        rx_queue: u64::from_str_radix(rx_queue, 16).ok()?,
        inode: fields.get(9)?.parse().ok()?,
    })
}

/// Bytes of the connection `local_port` ↔ `remote_port` its owner has not
/// read yet; `None` when there is no such connection.
pub fn unread_bytes(local_port: u16, remote_port: u16) -> Option<u64> {
    tcp_entries().into_iter().find(|e| e.local_port == local_port && e.remote_port == remote_port).map(|e| e.rx_queue)
}

/// How many of this process's fds are TCP sockets on local port `port`
/// (a listener on it counts too).
pub fn fds_on_port(port: u16) -> usize {
    let own: HashSet<u64> = std::fs::read_dir("/proc/self/fd")
        .expect("read /proc/self/fd")
        .filter_map(|entry| {
            let target = std::fs::read_link(entry.ok()?.path()).ok()?;
            let target = target.to_str()?;
            target.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect();
    tcp_entries().iter().filter(|e| e.local_port == port && e.inode != 0 && own.contains(&e.inode)).count()
}
