//! PROXY headers on sockets: reading a client's (under `timeout.proxy` and
//! shutdown) and writing one to a freshly connected server.
//!
//! Reading follows [`frame`] and never consumes a byte past the header: the
//! bytes it asks for outright are all header, a v1 line is peeked and
//! consumed up to its first `\n` only, and v2 TLVs are skipped through a
//! small buffer. Whatever the client sent after the header stays in the
//! socket for the relay.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::codec::{encode, encode_unknown, frame, Addresses, Frame, HEAD_MAX, V1_MAX};
use crate::config::ProxyVersion;

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

/// Reads one PROXY header (v1 or v2) from `client`, within `limit` (always
/// one: a client still sending its header holds a place in its frontend's
/// maxconn) and until `kill`. `Ok(None)`: a valid header that carries no
/// usable address (`UNKNOWN`, `LOCAL`, a non-TCP family): keep the socket's.
pub async fn read_header(
    client: &mut TcpStream,
    limit: Duration,
    kill: &CancellationToken,
) -> Result<Option<Addresses>, HeaderError> {
    let read = async { tokio::time::timeout(limit, read_framed(client)).await.unwrap_or(Err(HeaderError::Timeout)) };
    tokio::select! {
        result = read => result,
        _ = kill.cancelled() => Err(HeaderError::Shutdown),
    }
}

/// Reads what [`frame`] says belongs to the header, until it is complete.
async fn read_framed(client: &mut TcpStream) -> Result<Option<Addresses>, HeaderError> {
    let mut head = [0u8; HEAD_MAX];
    let mut have = 0;
    loop {
        let got = match frame(&head[..have]) {
            Frame::Need { more } => client.read(&mut head[have..have + more]).await?,
            Frame::Line { most } => read_line_rest(client, &mut head[have..have + most]).await?,
            Frame::Complete { addresses, len } => {
                skip(client, len.saturating_sub(have)).await?;
                return Ok(addresses);
            }
            Frame::Invalid(reason) => return Err(HeaderError::Malformed(reason)),
        };
        if got == 0 {
            return Err(HeaderError::Eof);
        }
        have += got;
    }
}

/// Reads into `into` up to and including the first `\n` the client sent,
/// consuming nothing after it; 0 when the client closed.
async fn read_line_rest(client: &mut TcpStream, into: &mut [u8]) -> io::Result<usize> {
    let mut peeked = [0u8; V1_MAX];
    let n = client.peek(&mut peeked[..into.len()]).await?;
    let take = peeked[..n].iter().position(|&b| b == b'\n').map_or(n, |i| i + 1);
    client.read_exact(&mut into[..take]).await?;
    Ok(take)
}

/// Consumes `len` header bytes usher does not read (v2 TLVs, up to 64 KiB)
/// through a small buffer.
async fn skip(client: &mut TcpStream, mut len: usize) -> io::Result<()> {
    let mut scratch = [0u8; 512];
    while len > 0 {
        let n = len.min(scratch.len());
        client.read_exact(&mut scratch[..n]).await?;
        len -= n;
    }
    Ok(())
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
    use crate::net::test_support::connected_pair as socket_pair;
    use crate::proxy_protocol::codec::tests::{addr, pair};

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
        assert_eq!(read_header(&mut server, Duration::from_secs(5), &kill).await, Err(HeaderError::Shutdown));

        let (mut client, mut server) = socket_pair().await;
        client.write_all(format!("PROXY {}", "1".repeat(120)).as_bytes()).await.unwrap();
        let got = read_header(&mut server, Duration::from_secs(5), &CancellationToken::new()).await;
        assert_eq!(got, Err(HeaderError::Malformed("v1 header without CRLF in 107 bytes")));
    }
}
