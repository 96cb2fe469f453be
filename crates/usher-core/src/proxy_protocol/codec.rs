//! PROXY headers as bytes: where one ends, what it says, and how usher
//! writes one. No I/O here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::config::ProxyVersion;

/// Longest v1 header, CRLF included (spec 2.1).
pub const V1_MAX: usize = 107;
/// Shortest valid header of either version: `PROXY UNKNOWN\r\n`.
pub(super) const MIN_HEADER: usize = 15;
const V1_PREFIX: &[u8] = b"PROXY ";
/// The 12 bytes every v2 header starts with (spec 2.2).
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Signature, version/command, family/transport, 2-byte length.
const V2_FIXED: usize = 16;
/// Largest v2 address block (two UNIX paths).
const V2_MAX_ADDRESSES: usize = 216;
/// Most header bytes the framing ever asks to hold at once: a v2 fixed part
/// and its address block (a v1 line is shorter); TLVs are skipped, not held.
pub(super) const HEAD_MAX: usize = V2_FIXED + V2_MAX_ADDRESSES;
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

/// What the first bytes of a stream say about the header they start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// A valid start: up to `more` further bytes are all header, so they can
    /// be read outright.
    Need { more: usize },
    /// An unfinished v1 line: it ends at the first `\n` among the next
    /// `most` bytes, and nothing after that `\n` is header.
    Line { most: usize },
    /// A whole header: its addresses and its length, which may run past the
    /// bytes given (v2 TLVs, which carry nothing usher reads).
    Complete { addresses: Option<Addresses>, len: usize },
    /// No header can start with these bytes.
    Invalid(&'static str),
}

/// The one framing of PROXY headers: what `bytes` (the stream's first
/// bytes, possibly incomplete) hold, and how many more bytes belong to the
/// header. Following it never reads past the header: the first 15 bytes
/// (the shortest header) are header whenever they can start one, a v1 line
/// ends at its first `\n`, and a v2 header announces its length.
pub fn frame(bytes: &[u8]) -> Frame {
    if !may_start_header(&bytes[..bytes.len().min(MIN_HEADER)]) {
        return Frame::Invalid("not a PROXY header");
    }
    if bytes.starts_with(V1_PREFIX) {
        return match bytes.iter().take(V1_MAX).position(|&b| b == b'\n') {
            Some(end) => match parse_v1(&bytes[..=end]) {
                Ok(addresses) => Frame::Complete { addresses, len: end + 1 },
                Err(reason) => Frame::Invalid(reason),
            },
            None if bytes.len() >= V1_MAX => Frame::Invalid("v1 header without CRLF in 107 bytes"),
            None if bytes.len() < MIN_HEADER => Frame::Need { more: MIN_HEADER - bytes.len() },
            None => Frame::Line { most: V1_MAX - bytes.len() },
        };
    }
    // A v2 header, or a start too short to tell the versions apart.
    let want = if bytes.len() < MIN_HEADER { MIN_HEADER } else { V2_FIXED };
    let Some(fixed) = bytes.first_chunk::<V2_FIXED>() else {
        return Frame::Need { more: want - bytes.len() };
    };
    let v2 = match parse_v2_fixed(fixed) {
        Ok(v2) => v2,
        Err(reason) => return Frame::Invalid(reason),
    };
    let addresses_end = V2_FIXED + v2.address_bytes();
    match bytes.get(V2_FIXED..addresses_end) {
        Some(block) => Frame::Complete { addresses: v2.addresses(block), len: V2_FIXED + v2.length },
        None => Frame::Need { more: addresses_end - bytes.len() },
    }
}

/// Could `bytes` be the start of a v1 or v2 header?
pub(super) fn may_start_header(bytes: &[u8]) -> bool {
    let fits = |prefix: &[u8]| bytes[..bytes.len().min(prefix.len())] == prefix[..bytes.len().min(prefix.len())];
    fits(V1_PREFIX) || fits(&V2_SIGNATURE)
}

/// Parses one complete header of either version from the start of `bytes`:
/// the addresses and the header's length, or `Err(None)` when `bytes` is a
/// valid but incomplete start, `Err(Some(reason))` when it is no header.
/// Used by white-box tests only.
#[cfg(feature = "internals")]
pub fn parse(bytes: &[u8]) -> Result<(Option<Addresses>, usize), Option<&'static str>> {
    match frame(bytes) {
        Frame::Complete { addresses, len } if len <= bytes.len() => Ok((addresses, len)),
        Frame::Complete { .. } | Frame::Need { .. } | Frame::Line { .. } => Err(None),
        Frame::Invalid(reason) => Err(Some(reason)),
    }
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
        let ip_len = match (self.family, block.len()) {
            (V2_INET, 12) => 4,
            (V2_INET6, 36) => 16,
            _ => return None,
        };
        let ip = |at: usize| {
            let octets = &block[at..at + ip_len];
            match <[u8; 4]>::try_from(octets) {
                Ok(v4) => IpAddr::from(v4),
                Err(_) => IpAddr::from(<[u8; 16]>::try_from(octets).unwrap_or_default()),
            }
        };
        // Source address, destination address, source port, destination port.
        let port = |at: usize| u16::from_be_bytes([block[at], block[at + 1]]);
        Some(Addresses {
            source: SocketAddr::new(ip(0), port(2 * ip_len)),
            destination: SocketAddr::new(ip(ip_len), port(2 * ip_len + 2)),
        })
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

/// The header `version` puts before a proxied connection from `source` to
/// `destination` (the frontend address the client reached); `None` for
/// [`ProxyVersion::None`]. Mixed families are sent as TCP6 with the IPv4
/// side mapped (`::ffff:a.b.c.d`).
pub fn encode(version: ProxyVersion, source: SocketAddr, destination: SocketAddr) -> Option<Vec<u8>> {
    let (s, d) = one_family(source.ip(), destination.ip());
    let (sport, dport) = (source.port(), destination.port());
    match version {
        ProxyVersion::None => None,
        ProxyVersion::V1 => {
            let family = if s.is_ipv4() { "TCP4" } else { "TCP6" };
            Some(format!("PROXY {family} {s} {d} {sport} {dport}\r\n").into_bytes())
        }
        ProxyVersion::V2 => {
            let (family, block) = if s.is_ipv4() { (V2_INET, 12) } else { (V2_INET6, 36) };
            let mut out = v2_fixed_part(V2_PROXY, family | V2_STREAM, block);
            for ip in [s, d] {
                match ip {
                    IpAddr::V4(ip) => out.extend_from_slice(&ip.octets()),
                    IpAddr::V6(ip) => out.extend_from_slice(&ip.octets()),
                }
            }
            out.extend_from_slice(&sport.to_be_bytes());
            out.extend_from_slice(&dport.to_be_bytes());
            Some(out)
        }
    }
}

/// Both addresses in one family: IPv4 when both are, else IPv6 with the
/// IPv4 side mapped.
fn one_family(source: IpAddr, destination: IpAddr) -> (IpAddr, IpAddr) {
    match (source, destination) {
        (IpAddr::V4(_), IpAddr::V4(_)) => (source, destination),
        (s, d) => (IpAddr::V6(v6(s)), IpAddr::V6(v6(d))),
    }
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// A v2 header's fixed part announcing a `length`-byte block, in a buffer
/// with room for the largest TCP address block.
fn v2_fixed_part(command: u8, family_transport: u8, length: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(V2_FIXED + 36);
    out.extend_from_slice(&V2_SIGNATURE);
    out.extend_from_slice(&[V2_VERSION | command, family_transport]);
    out.extend_from_slice(&length.to_be_bytes());
    out
}

/// The header `version` sends when the frontend address is unknown (its
/// socket gave none): v1 `UNKNOWN`, v2 `LOCAL` — "use the connection's own".
pub fn encode_unknown(version: ProxyVersion) -> Option<Vec<u8>> {
    match version {
        ProxyVersion::None => None,
        ProxyVersion::V1 => Some(b"PROXY UNKNOWN\r\n".to_vec()),
        ProxyVersion::V2 => Some(v2_fixed_part(V2_LOCAL, 0, 0)),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::proxy_protocol) fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    pub(in crate::proxy_protocol) fn pair(src: &str, dst: &str) -> Option<Addresses> {
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

    /// Following the framing as the socket reader does (reading all it
    /// asks for, a line up to its `\n`) reaches the header's end without
    /// taking a byte of what follows it.
    #[test]
    fn framing_never_asks_past_the_header() {
        let v1 = encode(ProxyVersion::V1, addr("192.0.2.9:4242"), addr("10.0.0.1:80")).unwrap();
        let v2 = encode(ProxyVersion::V2, addr("[2001:db8::7]:1"), addr("[::1]:2")).unwrap();
        let mut tlv = v2.clone();
        tlv[14..16].copy_from_slice(&(36u16 + 40).to_be_bytes());
        tlv.resize(tlv.len() + 40, 0);
        for header in [v1, v2, tlv, encode_unknown(ProxyVersion::V1).unwrap(), encode_unknown(ProxyVersion::V2).unwrap()]
        {
            let stream = [header.as_slice(), b"\nPROXY payload"].concat();
            let mut have = 0;
            let len = loop {
                match frame(&stream[..have]) {
                    Frame::Need { more } => have += more,
                    Frame::Line { most } => {
                        let line = &stream[have..(have + most).min(stream.len())];
                        have += line.iter().position(|&b| b == b'\n').map_or(line.len(), |i| i + 1);
                    }
                    Frame::Complete { len, .. } => break len,
                    Frame::Invalid(reason) => panic!("{reason}"),
                }
                assert!(have <= header.len(), "read past the header");
            };
            assert_eq!(len, header.len());
        }
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
}
