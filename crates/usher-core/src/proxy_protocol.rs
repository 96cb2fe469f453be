//! The PROXY protocol (HAProxy, version 1 text and version 2 binary): how a
//! balancer in front of usher tells it the real client address
//! (`frontends.X.accept_proxy`), and how usher tells its servers
//! (`servers.Y.send_proxy`).
//!
//! Reading never consumes a byte past the header: every valid header is at
//! least 15 bytes long, so the first 15 are read outright (rejecting as soon
//! as they cannot start a header); a v1 line is then peeked and consumed up
//! to its first `\n` only, and a v2 header reads its 16-byte fixed part and
//! exactly the length it announces. Whatever the client sent after the
//! header stays in the socket for the relay.
//!
//! Parsing and building are plain functions over bytes, tested here; the
//! socket part is tested on real sockets in `integration-tests`.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

pub use crate::config::ProxyVersion;

/// Longest v1 header, CRLF included (spec 2.1).
pub const V1_MAX: usize = 107;
/// Shortest valid header of either version: `PROXY UNKNOWN\r\n`.
const MIN_HEADER: usize = 15;
const V1_PREFIX: &[u8] = b"PROXY ";
/// The 12 bytes every v2 header starts with (spec 2.2).
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Signature, version/command, family/transport, 2-byte length.
const V2_FIXED: usize = 16;
const V2_VERSION: u8 = 0x20;
const V2_LOCAL: u8 = 0x00;
const V2_PROXY: u8 = 0x01;
const V2_STREAM: u8 = 0x01;
const V2_INET: u8 = 0x10;
const V2_INET6: u8 = 0x20;
const V2_UNIX: u8 = 0x30;

/// The two ends of the proxied connection, as the header tells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses {
    /// The real client.
    pub source: SocketAddr,
    /// The address the client connected to (the upstream frontend).
    pub destination: SocketAddr,
}

/// Why a client's header was refused (the session ends with `CR`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// Not a valid v1 or v2 header; the reason is a constant.
    Malformed(&'static str),
    /// The client closed before the header was complete.
    Eof,
    /// `frontends.X.timeout.proxy` expired first.
    Timeout,
    /// The broker was shutting down (`global.grace` ran out).
    Shutdown,
    /// Reading the socket failed (reset, …).
    Io(io::ErrorKind),
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::Malformed(reason) => write!(f, "malformed: {reason}"),
            HeaderError::Eof => f.write_str("closed before the end of the header"),
            HeaderError::Timeout => f.write_str("timeout.proxy expired"),
            HeaderError::Shutdown => f.write_str("shutting down"),
            HeaderError::Io(kind) => write!(f, "read failed: {kind}"),
        }
    }
}

impl From<io::Error> for HeaderError {
    fn from(err: io::Error) -> HeaderError {
        match err.kind() {
            io::ErrorKind::UnexpectedEof => HeaderError::Eof,
            kind => HeaderError::Io(kind),
        }
    }
}

/// Reads one PROXY header (v1 or v2) from `client`, within `limit` (zero =
/// no limit) and until `kill`. `Ok(None)`: a valid header that carries no
/// usable address (`UNKNOWN`, `LOCAL`, a non-TCP family): keep the socket's.
pub async fn read_header(
    client: &mut TcpStream,
    limit: Duration,
    kill: &CancellationToken,
) -> Result<Option<Addresses>, HeaderError> {
    let read = async {
        if limit.is_zero() {
            read_exact_header(client).await
        } else {
            tokio::time::timeout(limit, read_exact_header(client)).await.unwrap_or(Err(HeaderError::Timeout))
        }
    };
    tokio::select! {
        result = read => result,
        _ = kill.cancelled() => Err(HeaderError::Shutdown),
    }
}

async fn read_exact_header(client: &mut TcpStream) -> Result<Option<Addresses>, HeaderError> {
    let mut head = [0u8; V1_MAX];
    let mut have = 0;
    while have < MIN_HEADER {
        let n = client.read(&mut head[have..MIN_HEADER]).await?;
        if n == 0 {
            return Err(HeaderError::Eof);
        }
        have += n;
        if !may_start_header(&head[..have]) {
            return Err(HeaderError::Malformed("not a PROXY header"));
        }
    }
    if head.starts_with(V1_PREFIX) {
        read_v1_rest(client, &mut head, have).await
    } else {
        read_v2_rest(client, &head[..have]).await
    }
}

/// Could `bytes` be the start of a v1 or v2 header?
fn may_start_header(bytes: &[u8]) -> bool {
    let fits = |prefix: &[u8]| bytes[..bytes.len().min(prefix.len())] == prefix[..bytes.len().min(prefix.len())];
    fits(V1_PREFIX) || fits(&V2_SIGNATURE)
}

/// Completes a v1 line: peeks, then consumes up to the first `\n` only.
async fn read_v1_rest(
    client: &mut TcpStream,
    head: &mut [u8; V1_MAX],
    mut have: usize,
) -> Result<Option<Addresses>, HeaderError> {
    // A `\n` among the first bytes ends the line there (valid or not).
    while !head[..have].contains(&b'\n') {
        if have == V1_MAX {
            return Err(HeaderError::Malformed("v1 header without CRLF in 107 bytes"));
        }
        let mut peeked = [0u8; V1_MAX];
        let n = client.peek(&mut peeked[..V1_MAX - have]).await?;
        if n == 0 {
            return Err(HeaderError::Eof);
        }
        let take = peeked[..n].iter().position(|&b| b == b'\n').map_or(n, |i| i + 1);
        client.read_exact(&mut head[have..have + take]).await?;
        have += take;
    }
    parse_v1(&head[..have]).map_err(HeaderError::Malformed)
}

/// Completes a v2 header: the fixed part, then exactly its announced length.
async fn read_v2_rest(client: &mut TcpStream, first: &[u8]) -> Result<Option<Addresses>, HeaderError> {
    let mut fixed = [0u8; V2_FIXED];
    fixed[..first.len()].copy_from_slice(first);
    client.read_exact(&mut fixed[first.len()..]).await?;
    let v2 = parse_v2_fixed(&fixed).map_err(HeaderError::Malformed)?;
    let mut block = [0u8; 216];
    let block = &mut block[..v2.address_bytes()];
    client.read_exact(block).await?;
    // TLVs (up to 64 KiB) are skipped through a small buffer, never past the header.
    let mut left = v2.length - block.len();
    let mut scratch = [0u8; 512];
    while left > 0 {
        let n = left.min(scratch.len());
        client.read_exact(&mut scratch[..n]).await?;
        left -= n;
    }
    Ok(v2.addresses(block))
}

/// Parses one complete v1 line, `PROXY … \r\n` (CRLF included).
pub fn parse_v1(line: &[u8]) -> Result<Option<Addresses>, &'static str> {
    if line.len() > V1_MAX {
        return Err("v1 header longer than 107 bytes");
    }
    let body = line.strip_suffix(b"\r\n").ok_or("v1 header does not end with CRLF")?;
    let body = body.strip_prefix(V1_PREFIX).ok_or("v1 header does not start with \"PROXY \"")?;
    if body.iter().any(|&b| b == b'\r' || b == b'\n') {
        return Err("v1 header has a stray CR or LF");
    }
    let text = std::str::from_utf8(body).map_err(|_| "v1 header is not ASCII")?;
    let mut fields = text.split(' ');
    let family = fields.next().unwrap_or("");
    if family == "UNKNOWN" {
        // The rest of the line is to be ignored (spec 2.1).
        return Ok(None);
    }
    let (Some(src), Some(dst), Some(sport), Some(dport), None) =
        (fields.next(), fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err("v1 header needs: family, two addresses, two ports");
    };
    let (source, destination): (IpAddr, IpAddr) = match family {
        "TCP4" => (
            src.parse::<Ipv4Addr>().map_err(|_| "v1 TCP4 source is not an IPv4 address")?.into(),
            dst.parse::<Ipv4Addr>().map_err(|_| "v1 TCP4 destination is not an IPv4 address")?.into(),
        ),
        "TCP6" => (
            src.parse::<Ipv6Addr>().map_err(|_| "v1 TCP6 source is not an IPv6 address")?.into(),
            dst.parse::<Ipv6Addr>().map_err(|_| "v1 TCP6 destination is not an IPv6 address")?.into(),
        ),
        _ => return Err("v1 family is not TCP4, TCP6 or UNKNOWN"),
    };
    let sport = parse_port(sport).ok_or("v1 source port is not 0..=65535 without leading zeros")?;
    let dport = parse_port(dport).ok_or("v1 destination port is not 0..=65535 without leading zeros")?;
    Ok(Some(Addresses { source: SocketAddr::new(source, sport), destination: SocketAddr::new(destination, dport) }))
}

fn parse_port(text: &str) -> Option<u16> {
    let digits = !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit());
    if !digits || (text.len() > 1 && text.starts_with('0')) {
        return None;
    }
    text.parse().ok()
}

/// The 16-byte fixed part of a v2 header, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct V2Fixed {
    /// PROXY (true) or LOCAL (false).
    pub proxy: bool,
    /// Address family, high nibble: 0 UNSPEC, 1 INET, 2 INET6, 3 UNIX.
    pub family: u8,
    /// Transport, low nibble: 0 UNSPEC, 1 STREAM, 2 DGRAM.
    pub transport: u8,
    /// Bytes that follow the fixed part.
    pub length: usize,
}

impl V2Fixed {
    /// Size of the address block at the start of the variable part.
    pub fn address_bytes(&self) -> usize {
        match self.family {
            V2_INET => 12,
            V2_INET6 => 36,
            V2_UNIX => 216,
            _ => 0,
        }
    }

    /// The addresses a PROXY command over TCP carries; `None` otherwise
    /// (LOCAL, UNSPEC, UNIX, DGRAM: the socket's own addresses stand).
    pub fn addresses(&self, block: &[u8]) -> Option<Addresses> {
        if !self.proxy || self.transport != V2_STREAM {
            return None;
        }
        match (self.family, block.len()) {
            (V2_INET, 12) => {
                let ip = |at: usize| IpAddr::from([block[at], block[at + 1], block[at + 2], block[at + 3]]);
                let port = |at: usize| u16::from_be_bytes([block[at], block[at + 1]]);
                Some(Addresses {
                    source: SocketAddr::new(ip(0), port(8)),
                    destination: SocketAddr::new(ip(4), port(10)),
                })
            }
            (V2_INET6, 36) => {
                let ip = |at: usize| {
                    let mut octets = [0u8; 16];
                    octets.copy_from_slice(&block[at..at + 16]);
                    IpAddr::from(octets)
                };
                let port = |at: usize| u16::from_be_bytes([block[at], block[at + 1]]);
                Some(Addresses {
                    source: SocketAddr::new(ip(0), port(32)),
                    destination: SocketAddr::new(ip(16), port(34)),
                })
            }
            _ => None,
        }
    }
}

/// Checks the fixed part of a v2 header (spec 2.2): signature, version 2,
/// a known command, family and transport, and a length that holds the
/// family's addresses.
pub fn parse_v2_fixed(fixed: &[u8; V2_FIXED]) -> Result<V2Fixed, &'static str> {
    if fixed[..12] != V2_SIGNATURE {
        return Err("v2 signature mismatch");
    }
    if fixed[12] & 0xF0 != V2_VERSION {
        return Err("v2 version is not 2");
    }
    let proxy = match fixed[12] & 0x0F {
        V2_LOCAL => false,
        V2_PROXY => true,
        _ => return Err("v2 command is not LOCAL or PROXY"),
    };
    let family = fixed[13] & 0xF0;
    let transport = fixed[13] & 0x0F;
    if family > V2_UNIX {
        return Err("v2 address family is not UNSPEC, INET, INET6 or UNIX");
    }
    if transport > 0x02 {
        return Err("v2 transport is not UNSPEC, STREAM or DGRAM");
    }
    let fixed_part =
        V2Fixed { proxy, family, transport, length: usize::from(u16::from_be_bytes([fixed[14], fixed[15]])) };
    if fixed_part.length < fixed_part.address_bytes() {
        return Err("v2 length is shorter than its address block");
    }
    Ok(fixed_part)
}

/// Parses one complete header of either version from the start of `bytes`:
/// the addresses and the header's length, or `Err(None)` when `bytes` is a
/// valid but incomplete start, `Err(Some(reason))` when it is no header.
/// Used by white-box tests only.
#[cfg(feature = "internals")]
pub fn parse(bytes: &[u8]) -> Result<(Option<Addresses>, usize), Option<&'static str>> {
    if !may_start_header(&bytes[..bytes.len().min(MIN_HEADER)]) {
        return Err(Some("not a PROXY header"));
    }
    if bytes.starts_with(V1_PREFIX) {
        let Some(end) = bytes.iter().take(V1_MAX).position(|&b| b == b'\n') else {
            return Err(if bytes.len() >= V1_MAX { Some("v1 header without CRLF in 107 bytes") } else { None });
        };
        return parse_v1(&bytes[..=end]).map(|a| (a, end + 1)).map_err(Some);
    }
    let Some(fixed) = bytes.get(..V2_FIXED) else { return Err(None) };
    let mut head = [0u8; V2_FIXED];
    head.copy_from_slice(fixed);
    let v2 = parse_v2_fixed(&head).map_err(Some)?;
    let total = V2_FIXED + v2.length;
    if bytes.len() < total {
        return Err(None);
    }
    Ok((v2.addresses(&bytes[V2_FIXED..V2_FIXED + v2.address_bytes()]), total))
}

/// The header `version` puts before a proxied connection from `source` to
/// `destination` (the frontend address the client reached); `None` for
/// [`ProxyVersion::None`]. Mixed families are sent as TCP6 with the IPv4
/// side mapped (`::ffff:a.b.c.d`).
pub fn encode(version: ProxyVersion, source: SocketAddr, destination: SocketAddr) -> Option<Vec<u8>> {
    let ips = match (source.ip(), destination.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => Ok((s, d)),
        (s, d) => Err((v6(s), v6(d))),
    };
    let (sport, dport) = (source.port(), destination.port());
    match version {
        ProxyVersion::None => None,
        ProxyVersion::V1 => Some(
            match ips {
                Ok((s, d)) => format!("PROXY TCP4 {s} {d} {sport} {dport}\r\n"),
                Err((s, d)) => format!("PROXY TCP6 {s} {d} {sport} {dport}\r\n"),
            }
            .into_bytes(),
        ),
        ProxyVersion::V2 => {
            let mut out = Vec::with_capacity(V2_FIXED + 36);
            out.extend_from_slice(&V2_SIGNATURE);
            out.push(V2_VERSION | V2_PROXY);
            match ips {
                Ok((s, d)) => {
                    out.extend_from_slice(&[V2_INET | V2_STREAM, 0, 12]);
                    out.extend_from_slice(&s.octets());
                    out.extend_from_slice(&d.octets());
                }
                Err((s, d)) => {
                    out.extend_from_slice(&[V2_INET6 | V2_STREAM, 0, 36]);
                    out.extend_from_slice(&s.octets());
                    out.extend_from_slice(&d.octets());
                }
            }
            out.extend_from_slice(&sport.to_be_bytes());
            out.extend_from_slice(&dport.to_be_bytes());
            Some(out)
        }
    }
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// The header `version` sends when the frontend address is unknown (its
/// socket gave none): v1 `UNKNOWN`, v2 `LOCAL` — "use the connection's own".
pub fn encode_unknown(version: ProxyVersion) -> Option<Vec<u8>> {
    match version {
        ProxyVersion::None => None,
        ProxyVersion::V1 => Some(b"PROXY UNKNOWN\r\n".to_vec()),
        ProxyVersion::V2 => {
            let mut out = V2_SIGNATURE.to_vec();
            out.extend_from_slice(&[V2_VERSION | V2_LOCAL, 0, 0, 0]);
            Some(out)
        }
    }
}

/// Writes the `version` header for a client at `source` that reached
/// `destination` to a freshly connected `server`, before any client byte.
/// Nothing for [`ProxyVersion::None`].
pub async fn send_header(
    server: &mut TcpStream,
    version: ProxyVersion,
    source: SocketAddr,
    destination: Option<SocketAddr>,
) -> io::Result<()> {
    let header = match destination {
        Some(destination) => encode(version, source, destination),
        None => encode_unknown(version),
    };
    match header {
        Some(header) => server.write_all(&header).await,
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn pair(src: &str, dst: &str) -> Option<Addresses> {
        Some(Addresses { source: addr(src), destination: addr(dst) })
    }

    #[test]
    fn v1_tcp4_tcp6_unknown() {
        assert_eq!(
            parse_v1(b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n"),
            Ok(pair("192.0.2.1:56324", "198.51.100.2:443"))
        );
        assert_eq!(parse_v1(b"PROXY TCP6 2001:db8::1 ::1 0 65535\r\n"), Ok(pair("[2001:db8::1]:0", "[::1]:65535")));
        assert_eq!(parse_v1(b"PROXY UNKNOWN\r\n"), Ok(None));
        assert_eq!(parse_v1(b"PROXY UNKNOWN whatever 1 2 3\r\n"), Ok(None));
    }

    #[test]
    fn v1_rejects_bad_lines() {
        for bad in [
            &b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\n"[..],
            b"PROXY TCP4 192.0.2.1 198.51.100.2 56324\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443 7\r\n",
            b"PROXY TCP4 192.0.2.1  198.51.100.2 56324 443\r\n",
            b"PROXY TCP4 ::1 ::1 1 2\r\n",
            b"PROXY TCP6 192.0.2.1 198.51.100.2 1 2\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 65536 443\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 0443 443\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 +44 443\r\n",
            b"PROXY UDP4 192.0.2.1 198.51.100.2 1 2\r\n",
            b"PROXY  TCP4 192.0.2.1 198.51.100.2 1 2\r\n",
            b"proxy TCP4 192.0.2.1 198.51.100.2 1 2\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 1 2\r\r\n",
            b"PROXY TCP4 \xff.0.2.1 198.51.100.2 1 2\r\n",
            b"PROXY \r\n",
        ] {
            assert!(parse_v1(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let long = format!("PROXY UNKNOWN {}\r\n", "x".repeat(100));
        assert_eq!(parse_v1(long.as_bytes()), Err("v1 header longer than 107 bytes"));
    }

    #[test]
    fn longest_v1_header_fits_in_107_bytes() {
        let src = addr("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535");
        let header = encode(ProxyVersion::V1, src, src).unwrap();
        assert_eq!(header.len(), 104);
        assert_eq!(parse_v1(&header), Ok(Some(Addresses { source: src, destination: src })));
    }

    #[test]
    fn builds_v1() {
        let h = encode(ProxyVersion::V1, addr("127.0.0.1:5000"), addr("10.0.0.1:80")).unwrap();
        assert_eq!(h, b"PROXY TCP4 127.0.0.1 10.0.0.1 5000 80\r\n");
        let h = encode(ProxyVersion::V1, addr("[2001:db8::7]:5000"), addr("10.0.0.1:80")).unwrap();
        assert_eq!(h, b"PROXY TCP6 2001:db8::7 ::ffff:10.0.0.1 5000 80\r\n");
        assert_eq!(encode(ProxyVersion::None, addr("127.0.0.1:1"), addr("127.0.0.1:2")), None);
    }

    #[test]
    fn unknown_headers_parse_as_unknown() {
        assert_eq!(encode_unknown(ProxyVersion::None), None);
        for version in [ProxyVersion::V1, ProxyVersion::V2] {
            let bytes = encode_unknown(version).unwrap();
            assert_eq!(parse(&bytes), Ok((None, bytes.len())), "{version:?}");
        }
    }

    #[test]
    fn builds_v2_as_the_spec_lays_it_out() {
        let h = encode(ProxyVersion::V2, addr("127.0.0.1:5000"), addr("10.0.0.1:80")).unwrap();
        let mut want = V2_SIGNATURE.to_vec();
        want.extend_from_slice(&[0x21, 0x11, 0, 12, 127, 0, 0, 1, 10, 0, 0, 1, 0x13, 0x88, 0, 80]);
        assert_eq!(h, want);
        let h = encode(ProxyVersion::V2, addr("[2001:db8::7]:5000"), addr("[::1]:443")).unwrap();
        assert_eq!(h.len(), 16 + 36);
        assert_eq!(&h[12..16], &[0x21, 0x21, 0, 36]);
    }

    #[test]
    fn round_trips_both_versions() {
        for (src, dst) in [
            ("127.0.0.1:5000", "10.0.0.1:80"),
            ("[2001:db8::7]:1", "[::1]:65535"),
            ("192.0.2.1:0", "[2001:db8::1]:8080"),
        ] {
            for version in [ProxyVersion::V1, ProxyVersion::V2] {
                let mut bytes = encode(version, addr(src), addr(dst)).unwrap();
                let len = bytes.len();
                bytes.extend_from_slice(b"payload");
                let (got, used) = parse(&bytes).unwrap();
                assert_eq!(used, len, "{version:?}");
                let got = got.unwrap();
                let mapped = |a: SocketAddr| match (a, addr(src).is_ipv4() && addr(dst).is_ipv4()) {
                    (a, true) => a,
                    (a, false) => SocketAddr::new(IpAddr::V6(v6(a.ip())), a.port()),
                };
                assert_eq!(got, Addresses { source: mapped(addr(src)), destination: mapped(addr(dst)) });
            }
        }
    }

    fn v2(ver_cmd: u8, fam: u8, block: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.extend_from_slice(&[ver_cmd, fam]);
        out.extend_from_slice(&(block.len() as u16).to_be_bytes());
        out.extend_from_slice(block);
        out
    }

    #[test]
    fn v2_local_unspec_unix_and_dgram_keep_the_socket_addresses() {
        let inet = [127, 0, 0, 1, 127, 0, 0, 2, 0, 1, 0, 2];
        assert_eq!(parse(&v2(0x20, 0x11, &inet)), Ok((None, 28)), "LOCAL");
        assert_eq!(parse(&v2(0x21, 0x00, &[])), Ok((None, 16)), "UNSPEC");
        assert_eq!(parse(&v2(0x21, 0x12, &inet)), Ok((None, 28)), "DGRAM");
        assert_eq!(parse(&v2(0x21, 0x31, &[0; 216])), Ok((None, 232)), "UNIX");
        assert_eq!(parse(&v2(0x21, 0x11, &inet)), Ok((pair("127.0.0.1:1", "127.0.0.2:2"), 28)), "PROXY");
    }

    #[test]
    fn v2_skips_tlvs() {
        let mut block = vec![10, 0, 0, 1, 10, 0, 0, 2, 0, 7, 0, 8];
        block.extend_from_slice(&[0x04, 0, 3, b'a', b'b', b'c']);
        assert_eq!(parse(&v2(0x21, 0x11, &block)), Ok((pair("10.0.0.1:7", "10.0.0.2:8"), 16 + 18)));
    }

    #[test]
    fn v2_rejects_bad_fixed_parts() {
        let inet = [0u8; 12];
        assert_eq!(parse(&v2(0x11, 0x11, &inet)), Err(Some("v2 version is not 2")));
        assert_eq!(parse(&v2(0x22, 0x11, &inet)), Err(Some("v2 command is not LOCAL or PROXY")));
        assert!(parse(&v2(0x21, 0x41, &inet)).is_err());
        assert!(parse(&v2(0x21, 0x13, &inet)).is_err());
        assert_eq!(parse(&v2(0x21, 0x21, &inet)), Err(Some("v2 length is shorter than its address block")));
        let mut bad_sig = v2(0x21, 0x11, &inet);
        bad_sig[11] = b'X';
        assert_eq!(parse(&bad_sig), Err(Some("not a PROXY header")));
    }

    #[test]
    fn incomplete_and_foreign_starts() {
        assert_eq!(parse(b"PROX"), Err(None));
        assert_eq!(parse(b"PROXY TCP4 1.2.3.4"), Err(None));
        assert_eq!(parse(&V2_SIGNATURE[..7]), Err(None));
        assert_eq!(parse(&v2(0x21, 0x11, &[0; 12])[..20]), Err(None));
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(Some("not a PROXY header")));
        assert_eq!(parse(b"\x16\x03\x01"), Err(Some("not a PROXY header")));
        assert_eq!(parse(&[b'P'; 200]), Err(Some("not a PROXY header")));
        let no_crlf = format!("PROXY {}", "1".repeat(150));
        assert_eq!(parse(no_crlf.as_bytes()), Err(Some("v1 header without CRLF in 107 bytes")));
    }

    #[test]
    fn may_start_header_checks_only_what_it_has() {
        assert!(may_start_header(b""));
        assert!(may_start_header(b"PRO"));
        assert!(may_start_header(b"PROXY TCP4"));
        assert!(may_start_header(b"\r\n\r\n"));
        assert!(!may_start_header(b"PROXYX"));
        assert!(!may_start_header(b"\r\n\n"));
    }

    /// Never panics and never claims more bytes than it was given.
    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let starts: [&[u8]; 3] = [b"", b"PROXY ", &V2_SIGNATURE];
        for round in 0..20_000 {
            let mut bytes = starts[round % 3].to_vec();
            let extra = (next() % 140) as usize;
            bytes.extend((0..extra).map(|_| next() as u8));
            if round % 7 == 0 && bytes.len() > 15 {
                bytes[13] = 0x11;
                bytes[14] = 0;
                bytes[15] = (next() % 40) as u8;
            }
            if let Ok((_, used)) = parse(&bytes) {
                assert!(used <= bytes.len());
            }
        }
    }

    async fn socket_pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    /// The reader stops exactly at the end of the header, however the bytes
    /// arrive, and leaves the payload in the socket.
    #[tokio::test]
    async fn reader_consumes_the_header_only() {
        let v1 = encode(ProxyVersion::V1, addr("192.0.2.9:4242"), addr("10.0.0.1:80")).unwrap();
        // A v2 header with 600 bytes of TLVs after its addresses.
        let mut tlv = encode(ProxyVersion::V2, addr("192.0.2.9:4242"), addr("10.0.0.1:80")).unwrap();
        tlv[14..16].copy_from_slice(&(12u16 + 600).to_be_bytes());
        tlv.resize(tlv.len() + 600, 0);
        for header in [v1, tlv, b"PROXY UNKNOWN\r\n".to_vec()] {
            for chunk in [1, 3, 16, 4096] {
                let (mut client, mut server) = socket_pair().await;
                let mut bytes = header.clone();
                bytes.extend_from_slice(b"\r\nrest of the stream");
                let writer = tokio::spawn(async move {
                    for piece in bytes.chunks(chunk) {
                        client.write_all(piece).await.unwrap();
                        client.flush().await.unwrap();
                        tokio::task::yield_now().await;
                    }
                    client.shutdown().await.unwrap();
                    client
                });
                let got = read_header(&mut server, Duration::from_secs(5), &CancellationToken::new()).await.unwrap();
                if header.starts_with(b"PROXY UNKNOWN") {
                    assert_eq!(got, None);
                } else {
                    assert_eq!(got, pair("192.0.2.9:4242", "10.0.0.1:80"));
                }
                let mut rest = Vec::new();
                server.read_to_end(&mut rest).await.unwrap();
                assert_eq!(rest, b"\r\nrest of the stream", "chunk {chunk}");
                drop(writer.await.unwrap());
            }
        }
    }

    #[tokio::test]
    async fn reader_refuses_garbage_eof_and_silence() {
        let (mut client, mut server) = socket_pair().await;
        client.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
        let got = read_header(&mut server, Duration::from_secs(5), &CancellationToken::new()).await;
        assert_eq!(got, Err(HeaderError::Malformed("not a PROXY header")));

        let (mut client, mut server) = socket_pair().await;
        client.write_all(b"PROXY TCP4 1.2").await.unwrap();
        client.shutdown().await.unwrap();
        let got = read_header(&mut server, Duration::from_secs(5), &CancellationToken::new()).await;
        assert_eq!(got, Err(HeaderError::Eof));

        let (_client, mut server) = socket_pair().await;
        let got = read_header(&mut server, Duration::from_millis(50), &CancellationToken::new()).await;
        assert_eq!(got, Err(HeaderError::Timeout));

        let (_client, mut server) = socket_pair().await;
        let kill = CancellationToken::new();
        kill.cancel();
        assert_eq!(read_header(&mut server, Duration::ZERO, &kill).await, Err(HeaderError::Shutdown));

        let (mut client, mut server) = socket_pair().await;
        client.write_all(format!("PROXY {}", "1".repeat(120)).as_bytes()).await.unwrap();
        let got = read_header(&mut server, Duration::from_secs(5), &CancellationToken::new()).await;
        assert_eq!(got, Err(HeaderError::Malformed("v1 header without CRLF in 107 bytes")));
    }
}
