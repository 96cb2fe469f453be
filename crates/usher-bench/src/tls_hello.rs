//! A TLS 1.3-style ClientHello with a server name, built once per run: the
//! first bytes the `routing` case's clients send, so that usher and
//! HAProxy route them by SNI. Nothing terminates TLS here; the backend
//! reads the bytes as an opaque request.

/// The name the clients ask for and the routing rules match.
pub const SERVER_NAME: &str = "bench.example";

/// A ClientHello naming `server_name`, padded (RFC 7685's padding
/// extension) to exactly `len` bytes, record header included.
///
/// # Panics
/// If `len` is shorter than the hello without padding.
pub fn client_hello(server_name: &str, len: usize) -> Vec<u8> {
    let name = server_name.as_bytes();
    let mut sni = Vec::new();
    sni.extend_from_slice(&u16_be(name.len() + 3)); // server_name_list
    sni.push(0); // host_name
    sni.extend_from_slice(&u16_be(name.len()));
    sni.extend_from_slice(name);
    let mut extensions = extension(0x0000, &sni);
    // supported_versions: TLS 1.3.
    extensions.extend(extension(0x002b, &[2, 0x03, 0x04]));

    let unpadded = 5 + 4 + 2 + 32 + 1 + 4 + 2 + 2 + extensions.len();
    assert!(len >= unpadded + 4, "a ClientHello needs at least {} bytes", unpadded + 4);
    extensions.extend(extension(0x0015, &vec![0; len - unpadded - 4]));

    let mut body = vec![0x03, 0x03]; // legacy_version TLS 1.2
    body.extend((0..32u8).map(|i| i.wrapping_mul(37))); // random
    body.push(0); // no session id
    body.extend_from_slice(&[0, 2, 0x13, 0x01]); // TLS_AES_128_GCM_SHA256
    body.extend_from_slice(&[1, 0]); // null compression
    body.extend_from_slice(&u16_be(extensions.len()));
    body.extend(extensions);

    let mut handshake = vec![1]; // client_hello
    handshake.extend_from_slice(&u24_be(body.len()));
    handshake.extend(body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&u16_be(handshake.len()));
    record.extend(handshake);
    debug_assert_eq!(record.len(), len);
    record
}

fn extension(kind: u16, data: &[u8]) -> Vec<u8> {
    let mut out = kind.to_be_bytes().to_vec();
    out.extend_from_slice(&u16_be(data.len()));
    out.extend_from_slice(data);
    out
}

fn u16_be(n: usize) -> [u8; 2] {
    u16::try_from(n).expect("fits a TLS length").to_be_bytes()
}

fn u24_be(n: usize) -> [u8; 3] {
    let b = u32::try_from(n).expect("fits a TLS length").to_be_bytes();
    [b[1], b[2], b[3]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hello_has_the_asked_length_and_parses_with_its_server_name() {
        let hello = client_hello(SERVER_NAME, 128);
        assert_eq!(hello.len(), 128);
        let (rest, record) = tls_parser::parse_tls_plaintext(&hello).expect("a TLS record");
        assert!(rest.is_empty());
        let tls_parser::TlsMessage::Handshake(tls_parser::TlsMessageHandshake::ClientHello(ch)) = &record.msg[0] else {
            panic!("not a ClientHello: {record:?}");
        };
        let (_, extensions) = tls_parser::parse_tls_client_hello_extensions(ch.ext.expect("extensions")).expect("ext");
        let names: Vec<&[u8]> = extensions
            .iter()
            .filter_map(|e| match e {
                tls_parser::TlsExtension::SNI(list) => Some(list[0].1),
                _ => None,
            })
            .collect();
        assert_eq!(names, vec![SERVER_NAME.as_bytes()]);
    }
}
