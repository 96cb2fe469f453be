//! A real DNS server on 127.0.0.1 for the tests: hickory-server answering
//! from an in-memory zone whose records the test changes, on a UDP socket
//! the test bound (port 0) and passes in. It counts the queries it gets
//! (so a test can wait for a re-resolution instead of sleeping) and can be
//! told to stop answering, as a DNS server that went away.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Header, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, SOA, SRV};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType, RrKey};
use hickory_server::authority::{AuthorityObject, Catalog, ZoneType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryAuthority;
use hickory_server::ServerFuture;

/// A DNS server for one zone.
pub struct DnsServer {
    pub addr: SocketAddr,
    zone: Arc<InMemoryAuthority>,
    origin: Name,
    serial: AtomicU32,
    silent: Arc<AtomicBool>,
    queries: Arc<AtomicU64>,
    _server: ServerFuture<Switch>,
}

/// Answers from the catalog, or not at all while silent.
struct Switch {
    catalog: Catalog,
    silent: Arc<AtomicBool>,
    queries: Arc<AtomicU64>,
}

#[async_trait::async_trait]
impl RequestHandler for Switch {
    async fn handle_request<R: ResponseHandler>(&self, request: &Request, response: R) -> ResponseInfo {
        self.queries.fetch_add(1, Ordering::SeqCst);
        if self.silent.load(Ordering::SeqCst) {
            // Nothing is sent: the client waits for its timeout.
            let mut header = Header::new();
            header.set_response_code(ResponseCode::ServFail);
            return header.into();
        }
        self.catalog.handle_request(request, response).await
    }
}

fn name(text: &str) -> Name {
    Name::from_ascii(text).expect("a DNS name")
}

impl DnsServer {
    /// Serves zone `origin` (such as `"usher.test."`) on `socket`. Must run
    /// inside a tokio runtime.
    pub fn start(socket: std::net::UdpSocket, origin: &str) -> DnsServer {
        let addr = socket.local_addr().expect("bound");
        let origin = name(origin);
        let mut zone = InMemoryAuthority::empty(origin.clone(), ZoneType::Primary, false);
        let soa = SOA::new(name("ns.usher.test."), name("admin.usher.test."), 1, 60, 60, 60, 1);
        assert!(zone.upsert_mut(Record::from_rdata(origin.clone(), 60, RData::SOA(soa)), 1), "SOA");
        let zone = Arc::new(zone);
        let mut catalog = Catalog::new();
        catalog.upsert(LowerName::from(origin.clone()), vec![zone.clone() as Arc<dyn AuthorityObject>]);
        let (silent, queries) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
        let handler = Switch { catalog, silent: silent.clone(), queries: queries.clone() };
        let mut server = ServerFuture::new(handler);
        socket.set_nonblocking(true).expect("nonblocking");
        server.register_socket(tokio::net::UdpSocket::from_std(socket).expect("tokio socket"));
        DnsServer { addr, zone, origin, serial: AtomicU32::new(1), silent, queries, _server: server }
    }

    /// A zone-relative or absolute name: `"web"` is `web.ORIGIN`.
    fn fqdn(&self, host: &str) -> Name {
        if host.ends_with('.') {
            name(host)
        } else {
            name(host).append_domain(&self.origin).expect("a name in the zone")
        }
    }

    async fn replace(&self, host: &str, types: &[RecordType], records: Vec<Record>) {
        let owner = self.fqdn(host);
        {
            let mut all = self.zone.records_mut().await;
            for t in types {
                all.remove(&RrKey::new(LowerName::from(owner.clone()), *t));
            }
        }
        let serial = self.serial.fetch_add(1, Ordering::SeqCst) + 1;
        for record in records {
            assert!(self.zone.upsert(record, serial).await, "record added");
        }
    }

    /// `host`'s A and AAAA records become `ips` (none: the name has no address).
    pub async fn set_addresses(&self, host: &str, ips: &[IpAddr], ttl: u32) {
        let owner = self.fqdn(host);
        let records = ips
            .iter()
            .map(|ip| {
                let data = match ip {
                    IpAddr::V4(v4) => RData::A(A(*v4)),
                    IpAddr::V6(v6) => RData::AAAA(AAAA(*v6)),
                };
                Record::from_rdata(owner.clone(), ttl, data)
            })
            .collect();
        self.replace(host, &[RecordType::A, RecordType::AAAA], records).await;
    }

    /// `host`'s SRV records become `(weight, port, target)`, priority 0.
    pub async fn set_srv(&self, host: &str, records: &[(u16, u16, &str)], ttl: u32) {
        let owner = self.fqdn(host);
        let records = records
            .iter()
            .map(|(weight, port, target)| {
                Record::from_rdata(owner.clone(), ttl, RData::SRV(SRV::new(0, *weight, *port, self.fqdn(target))))
            })
            .collect();
        self.replace(host, &[RecordType::SRV], records).await;
    }

    /// While silent, queries get no answer at all.
    pub fn set_silent(&self, silent: bool) {
        self.silent.store(silent, Ordering::SeqCst);
    }

    /// Queries received so far.
    pub fn queries(&self) -> u64 {
        self.queries.load(Ordering::SeqCst)
    }

    /// Waits until `more` further queries arrived (bounded by `limit`).
    pub async fn wait_queries(&self, more: u64, limit: Duration) {
        let target = self.queries() + more;
        let deadline = tokio::time::Instant::now() + limit;
        while self.queries() < target {
            assert!(tokio::time::Instant::now() < deadline, "fewer than {more} DNS queries within {limit:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
