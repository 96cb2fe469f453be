//! What the routing tests share: TLS servers and clients (rustls) with one
//! self-signed certificate, and a broker config with backends to route to.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::crypto::ring::default_provider;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Every name the test certificate is valid for.
pub const NAMES: &[&str] = &["api.test", "v2.api.test", "web.test", "mail.test", "other.test"];

/// A certificate for [`NAMES`] and its key, made once per test.
pub struct TestPki {
    cert: CertificateDer<'static>,
    key: Vec<u8>,
}

impl TestPki {
    pub fn new() -> TestPki {
        let names: Vec<String> = NAMES.iter().map(|n| (*n).to_owned()).collect();
        let certified = rcgen::generate_simple_self_signed(names).expect("self-signed certificate");
        TestPki { cert: certified.cert.der().clone(), key: certified.key_pair.serialize_der() }
    }

    fn server_config(&self) -> Arc<ServerConfig> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone()));
        let mut config = ServerConfig::builder_with_provider(Arc::new(default_provider()))
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(vec![self.cert.clone()], key)
            .expect("server certificate");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }

    /// A client that trusts the test certificate and offers `alpn`.
    pub fn connector(&self, alpn: &[&str]) -> TlsConnector {
        TlsConnector::from(self.client_config(alpn))
    }

    pub fn client_config(&self, alpn: &[&str]) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.cert.clone()).expect("trust the test certificate");
        let mut config = ClientConfig::builder_with_provider(Arc::new(default_provider()))
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        Arc::new(config)
    }

    /// A TLS server on 127.0.0.1:0 that answers each connection's line
    /// with `"{name}:{line}"` over TLS: which server answered, end to end.
    pub fn server(&self, name: &'static str) -> TlsServer {
        let std = integration_tests::listener();
        let addr = std.local_addr().expect("addr");
        std.set_nonblocking(true).expect("nonblocking");
        let listener = TcpListener::from_std(std).expect("tokio listener");
        let acceptor = TlsAcceptor::from(self.server_config());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(stream).await else { return };
                    let mut line = Vec::new();
                    let mut byte = [0u8; 1];
                    while tls.read(&mut byte).await.unwrap_or(0) == 1 && byte[0] != b'\n' {
                        line.push(byte[0]);
                    }
                    let reply = format!("{name}:{}\n", String::from_utf8_lossy(&line));
                    let _ = tls.write_all(reply.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        TlsServer { addr, task }
    }
}

pub struct TlsServer {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TLS handshake with `sni` over `stream`, then one line and its answer:
/// the answering server's name and the line.
pub async fn tls_line<S>(connector: &TlsConnector, stream: S, sni: &str, line: &str) -> String
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let name = ServerName::try_from(sni.to_owned()).expect("server name");
    let mut tls = connector.connect(name, stream).await.expect("TLS handshake through usher");
    tls.write_all(format!("{line}\n").as_bytes()).await.expect("write over TLS");
    let mut reply = String::new();
    tls.read_to_string(&mut reply).await.expect("read over TLS");
    reply.trim_end().to_owned()
}

/// Connects to `addr` with `TCP_NODELAY`, so each write is its own segment.
pub async fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    stream
}

/// The config lines of a backend `name` with one server at `addr`.
pub fn backend(name: &str, addr: SocketAddr) -> String {
    format!("[backends.{name}.servers.s1]\naddress = \"{addr}\"\n")
}
