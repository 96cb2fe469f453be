//! PROXY headers are network input: whatever bytes a client sends, parsing
//! answers (a header, "incomplete" or a reason) and never panics; and every
//! header usher sends parses back to the addresses it carries, whatever
//! prefix of it has arrived.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use proptest::prelude::*;
use usher_core::config::ProxyVersion;
use usher_core::proxy_protocol::codec::{encode, parse, parse_v1};

const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// Bytes that reach the parser's deeper branches: random tails after a v1
/// prefix or the v2 signature (with a random version/command, family and
/// length), as well as plain noise.
fn header_like() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300),
        prop::collection::vec(any::<u8>(), 0..120).prop_map(|tail| [b"PROXY ".as_slice(), &tail].concat()),
        (prop::collection::vec(prop::sample::select(b"PROXY TCP46UNKOWN0123456789.:abcdef \r\n".to_vec()), 0..120))
            .prop_map(|tail| [b"PROXY ".as_slice(), &tail].concat()),
        (any::<[u8; 4]>(), prop::collection::vec(any::<u8>(), 0..300)).prop_map(|(fixed, tail)| [
            V2_SIGNATURE,
            &fixed,
            &tail
        ]
        .concat()),
    ]
}

fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port)),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port)),
    ]
}

/// IPv4 seen through the IPv6 header of a mixed pair (`::ffff:a.b.c.d`).
fn as_sent(addr: SocketAddr, mixed: bool) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(v4) if mixed => SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), addr.port()),
        _ => addr,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn any_bytes_parse_without_panicking(bytes in header_like()) {
        if let Ok((_, used)) = parse(&bytes) {
            prop_assert!(used <= bytes.len(), "header longer than the input");
        }
        let _ = parse_v1(&bytes);
    }

    #[test]
    fn every_header_usher_sends_parses_back(
        source in socket_addr(),
        destination in socket_addr(),
        v2 in any::<bool>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let version = if v2 { ProxyVersion::V2 } else { ProxyVersion::V1 };
        let header = encode(version, source, destination).expect("a header");
        let (got, used) = parse(&header).expect("parses");
        prop_assert_eq!(used, header.len());
        let got = got.expect("addresses");
        let mixed = source.is_ipv4() != destination.is_ipv4();
        prop_assert_eq!(got.source, as_sent(source, mixed));
        prop_assert_eq!(got.destination, as_sent(destination, mixed));
        // Any strict prefix is "incomplete", never an error or a header.
        let prefix = &header[..cut.index(header.len())];
        prop_assert_eq!(parse(prefix), Err(None));
    }
}
