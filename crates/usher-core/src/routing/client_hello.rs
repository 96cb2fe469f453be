//! Reading a TLS ClientHello from the first bytes a client sent, to route
//! by its server name (SNI) and protocols (ALPN). Nothing is decrypted or
//! answered: the session forwards every byte it read, unchanged, to the
//! server it picks, and the TLS handshake happens between the two ends.
//!
//! [`read`] is called again on the whole prefix each time more bytes
//! arrive, so a ClientHello split over several TCP segments or several TLS
//! records reads the same as one in a single packet. The parsing itself is
//! `tls-parser`'s (records, the handshake message, the extensions); this
//! file only joins handshake fragments and says whether more bytes are needed.

use std::borrow::Cow;

use tls_parser::{
    parse_tls_client_hello_extensions, parse_tls_message_handshake, parse_tls_raw_record, Err as ParseErr, SNIType,
    TlsExtension, TlsMessage, TlsMessageHandshake, TlsRecordType,
};

/// Most bytes a session reads looking for a ClientHello. A real one is a
/// few hundred bytes (up to a few KiB with post-quantum key shares or many
/// extensions); past this the client is treated as sending none, so a
/// peer cannot make a session hold more.
pub const MAX_CLIENT_HELLO: usize = 16 * 1024;

/// TLS handshake message type of a ClientHello.
const CLIENT_HELLO: u8 = 1;
/// A handshake message's header: type (1 byte) and length (3 bytes).
const HANDSHAKE_HEADER: usize = 4;

/// What the routing rules can match in a ClientHello.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientHello {
    /// The server name the client asked for, if it sent one.
    pub sni: Option<String>,
    /// The application protocols it offered, in its order.
    pub alpn: Vec<Vec<u8>>,
}

/// What the bytes read so far are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HelloRead {
    /// A ClientHello may still come: read more (within the bound).
    NeedMore,
    /// A complete ClientHello.
    Hello(ClientHello),
    /// The first byte is not a TLS handshake record: a plain TCP client.
    NotTls,
    /// TLS records that do not make a ClientHello.
    Malformed,
}

/// What to do with the bytes a client sent so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inspection {
    /// Read at most this many more bytes (never 0), then inspect again.
    ReadMore(usize),
    /// Done: a ClientHello, or why there is none.
    Done(HelloRead),
}

/// The session's step: read more within [`MAX_CLIENT_HELLO`], or stop. At
/// the bound a ClientHello still incomplete counts as malformed, so no
/// client makes a session read more than the bound before it is routed.
pub fn inspect(bytes: &[u8]) -> Inspection {
    match read(bytes) {
        HelloRead::NeedMore if bytes.len() >= MAX_CLIENT_HELLO => Inspection::Done(HelloRead::Malformed),
        HelloRead::NeedMore => Inspection::ReadMore(MAX_CLIENT_HELLO - bytes.len()),
        verdict => Inspection::Done(verdict),
    }
}

/// Reads `bytes`, everything the client sent so far.
pub fn read(bytes: &[u8]) -> HelloRead {
    match bytes.first() {
        None => return HelloRead::NeedMore,
        Some(&first) if first != u8::from(TlsRecordType::Handshake) => return HelloRead::NotTls,
        Some(_) => {}
    }
    // Handshake fragments joined in order; borrowed while one record holds
    // the whole message (the usual case), copied only when it spans several.
    let mut handshake: Cow<'_, [u8]> = Cow::Borrowed(&[]);
    let mut rest = bytes;
    loop {
        let record = match parse_tls_raw_record(rest) {
            Ok((after, record)) => {
                rest = after;
                record
            }
            Err(ParseErr::Incomplete(_)) => return HelloRead::NeedMore,
            Err(_) => return HelloRead::Malformed,
        };
        // Only handshake records may precede the ClientHello, and none is empty.
        if record.hdr.record_type != TlsRecordType::Handshake || record.data.is_empty() {
            return HelloRead::Malformed;
        }
        if handshake.is_empty() {
            handshake = Cow::Borrowed(record.data);
        } else {
            handshake.to_mut().extend_from_slice(record.data);
        }
        if handshake[0] != CLIENT_HELLO {
            return HelloRead::Malformed;
        }
        if handshake.len() < HANDSHAKE_HEADER {
            continue;
        }
        let length = u32::from_be_bytes([0, handshake[1], handshake[2], handshake[3]]) as usize;
        if HANDSHAKE_HEADER + length > MAX_CLIENT_HELLO {
            return HelloRead::Malformed;
        }
        if handshake.len() >= HANDSHAKE_HEADER + length {
            return hello(&handshake[..HANDSHAKE_HEADER + length]);
        }
    }
}

/// Parses one complete ClientHello handshake message.
fn hello(message: &[u8]) -> HelloRead {
    let Ok((_, TlsMessage::Handshake(TlsMessageHandshake::ClientHello(contents)))) =
        parse_tls_message_handshake(message)
    else {
        return HelloRead::Malformed;
    };
    let mut found = ClientHello::default();
    let Some(extensions) = contents.ext else { return HelloRead::Hello(found) };
    let Ok((_, extensions)) = parse_tls_client_hello_extensions(extensions) else { return HelloRead::Malformed };
    for extension in extensions {
        match extension {
            TlsExtension::SNI(names) => {
                let host = names.iter().find(|(kind, _)| *kind == SNIType::HostName);
                if let Some((_, name)) = host {
                    // RFC 6066: an ASCII host name; anything else cannot match a rule.
                    match std::str::from_utf8(name) {
                        Ok(name) if name.is_ascii() => found.sni = Some(name.to_owned()),
                        _ => return HelloRead::Malformed,
                    }
                }
            }
            TlsExtension::ALPN(protocols) => found.alpn = protocols.iter().map(|p| p.to_vec()).collect(),
            _ => {}
        }
    }
    HelloRead::Hello(found)
}

#[cfg(test)]
pub(crate) mod tests {
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;

    /// A ClientHello handshake message (type, length, body) with these
    /// extensions' bytes.
    pub(crate) fn client_hello_message(sni: Option<&str>, alpn: &[&str]) -> Vec<u8> {
        let mut extensions = Vec::new();
        if let Some(name) = sni {
            let name = name.as_bytes();
            let list_len = 3 + name.len();
            extensions.extend_from_slice(&[0x00, 0x00]);
            extensions.extend_from_slice(&((list_len + 2) as u16).to_be_bytes());
            extensions.extend_from_slice(&(list_len as u16).to_be_bytes());
            extensions.push(0);
            extensions.extend_from_slice(&(name.len() as u16).to_be_bytes());
            extensions.extend_from_slice(name);
        }
        if !alpn.is_empty() {
            let list: Vec<u8> = alpn.iter().flat_map(|p| std::iter::once(p.len() as u8).chain(p.bytes())).collect();
            extensions.extend_from_slice(&[0x00, 0x10]);
            extensions.extend_from_slice(&((list.len() + 2) as u16).to_be_bytes());
            extensions.extend_from_slice(&(list.len() as u16).to_be_bytes());
            extensions.extend_from_slice(&list);
        }
        let mut body = vec![0x03, 0x03];
        body.extend_from_slice(&[7; 32]); // random
        body.push(0); // no session id
        body.extend_from_slice(&[0x00, 0x02, 0x13, 0x01]); // one cipher suite
        body.extend_from_slice(&[0x01, 0x00]); // null compression
        body.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
        body.extend_from_slice(&extensions);
        let mut message = vec![CLIENT_HELLO];
        message.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        message.extend_from_slice(&body);
        message
    }

    /// `message` cut into handshake records of at most `fragment` bytes.
    pub(crate) fn in_records(message: &[u8], fragment: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in message.chunks(fragment) {
            out.extend_from_slice(&[0x16, 0x03, 0x01]);
            out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
            out.extend_from_slice(chunk);
        }
        out
    }

    fn expected(sni: &str, alpn: &[&str]) -> HelloRead {
        HelloRead::Hello(ClientHello {
            sni: Some(sni.to_owned()),
            alpn: alpn.iter().map(|p| p.as_bytes().to_vec()).collect(),
        })
    }

    #[test]
    fn one_record_gives_sni_and_alpn() {
        let bytes = in_records(&client_hello_message(Some("api.example.com"), &["h2", "http/1.1"]), 16_384);
        assert_eq!(read(&bytes), expected("api.example.com", &["h2", "http/1.1"]));
    }

    #[test]
    fn every_prefix_needs_more_and_fragments_join() {
        let message = client_hello_message(Some("a.example.com"), &["h2"]);
        for fragment in [1, 2, 7, 64] {
            let bytes = in_records(&message, fragment);
            for cut in 0..bytes.len() {
                assert_eq!(read(&bytes[..cut]), HelloRead::NeedMore, "fragment {fragment}, cut {cut}");
            }
            assert_eq!(read(&bytes), expected("a.example.com", &["h2"]), "fragment {fragment}");
        }
    }

    #[test]
    fn bytes_after_the_hello_do_not_matter() {
        let mut bytes = in_records(&client_hello_message(Some("x.test"), &[]), 100);
        bytes.extend_from_slice(b"\x14\x03\x03\x00\x01\x01 early data");
        assert_eq!(read(&bytes), expected("x.test", &[]));
    }

    #[test]
    fn plain_tcp_and_other_records_are_told_apart() {
        assert_eq!(read(b"GET / HTTP/1.1\r\n"), HelloRead::NotTls);
        assert_eq!(read(b"\x15\x03\x01\x00\x02\x02\x28"), HelloRead::NotTls, "an alert first is no handshake");
        // A ServerHello (type 2) where a ClientHello should be.
        assert_eq!(read(b"\x16\x03\x01\x00\x04\x02\x00\x00\x00"), HelloRead::Malformed);
        // An empty handshake record.
        assert_eq!(read(b"\x16\x03\x01\x00\x00"), HelloRead::Malformed);
        // A ClientHello announcing more than the bound.
        assert_eq!(read(b"\x16\x03\x01\x00\x04\x01\x01\x00\x00"), HelloRead::Malformed);
    }

    #[test]
    fn a_hello_without_extensions_has_neither() {
        let mut message = client_hello_message(None, &[]);
        // Drop the (empty) extensions block: TLS 1.0-style hello.
        message.truncate(message.len() - 2);
        let len = (message.len() - 4) as u32;
        message[1..4].copy_from_slice(&len.to_be_bytes()[1..]);
        assert_eq!(read(&in_records(&message, 512)), HelloRead::Hello(ClientHello::default()));
    }

    /// Feeds `input` to [`inspect`] as a session does, in reads of at most
    /// `chunk` bytes and never more than it allows; returns the verdict and
    /// how many bytes were read.
    fn feed(input: &[u8], chunk: usize) -> (HelloRead, usize) {
        let mut read_so_far = 0;
        loop {
            match inspect(&input[..read_so_far]) {
                Inspection::Done(verdict) => return (verdict, read_so_far),
                Inspection::ReadMore(room) => {
                    assert!(room > 0);
                    let n = room.min(chunk).min(input.len() - read_so_far);
                    if n == 0 {
                        return (HelloRead::NeedMore, read_so_far);
                    }
                    read_so_far += n;
                }
            }
        }
    }

    /// Random ClientHello-like input: handshake records (of random sizes)
    /// around a ClientHello header announcing a random length, random bytes.
    fn handshake_like() -> impl Strategy<Value = Vec<u8>> {
        (vec(any::<u8>(), 0..40_000), 1usize..400, any::<u32>()).prop_map(|(body, fragment, announced)| {
            let mut message = vec![CLIENT_HELLO];
            message.extend_from_slice(&(announced & 0x00ff_ffff).to_be_bytes()[1..]);
            message.extend_from_slice(&body);
            in_records(&message, fragment)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        #[test]
        fn random_bytes_never_panic_nor_read_past_the_bound(input in vec(any::<u8>(), 0..40_000), chunk in 1usize..5000) {
            let (_, read) = feed(&input, chunk);
            prop_assert!(read <= MAX_CLIENT_HELLO);
        }

        #[test]
        fn handshake_like_input_never_panics_nor_reads_past_the_bound(input in handshake_like(), chunk in 1usize..5000) {
            let (verdict, read) = feed(&input, chunk);
            prop_assert!(read <= MAX_CLIENT_HELLO, "read {} bytes", read);
            prop_assert!(verdict != HelloRead::NotTls);
        }

        #[test]
        fn mutated_hellos_never_panic(
            sni in "[a-z0-9]{1,20}(\\.[a-z]{1,10}){0,3}",
            fragment in 1usize..300,
            flips in vec((any::<usize>(), any::<u8>()), 1..8),
            chunk in 1usize..600,
        ) {
            let mut input = in_records(&client_hello_message(Some(&sni), &["h2"]), fragment);
            prop_assert_eq!(feed(&input, chunk), (expected(&sni, &["h2"]), input.len()));
            for (at, value) in flips {
                let i = at % input.len();
                input[i] = value;
            }
            let (_, read) = feed(&input, chunk);
            prop_assert!(read <= input.len().min(MAX_CLIENT_HELLO));
        }
    }
}
