//! One resolution through hickory-resolver: A and AAAA records, or SRV
//! records and the addresses of their targets, with the shortest TTL met.
//! Every outcome that is not a usable answer — a timeout, SERVFAIL,
//! a malformed reply, no records — is an error string for the log and
//! `/stats`; nothing here panics on what a DNS server sends.

use std::time::Duration;

use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, NameServerConfigGroup, ResolverConfig,
};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::{ResolveError, TokioResolver};

use super::answer::{Answer, QueryKey, Target};
use crate::config::{RecordKind, ResolverSettings};

/// A resolver built from `[resolvers]`.
pub struct Resolver {
    inner: TokioResolver,
    timeout: Duration,
}

impl Resolver {
    /// Configured nameservers, else those of `/etc/resolv.conf`. Must run
    /// inside a tokio runtime.
    pub fn new(settings: &ResolverSettings) -> Result<Resolver, String> {
        let mut builder = if settings.nameservers.is_empty() {
            TokioResolver::builder_tokio().map_err(|err| format!("cannot read /etc/resolv.conf: {err}"))?
        } else {
            let servers: Vec<NameServerConfig> = settings
                .nameservers
                .iter()
                .flat_map(|addr| [NameServerConfig::new(*addr, Protocol::Udp), NameServerConfig::new(*addr, Protocol::Tcp)])
                .collect();
            let config = ResolverConfig::from_parts(None, Vec::new(), NameServerConfigGroup::from(servers));
            TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
        };
        let opts = builder.options_mut();
        // The schedule decides when to ask again (TTL included): a cache
        // would only hide a change, or a DNS server that stopped answering.
        opts.cache_size = 0;
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        opts.timeout = settings.timeout;
        opts.attempts = 1;
        Ok(Resolver { inner: builder.build(), timeout: settings.timeout })
    }

    /// Resolves `key` within the configured timeout.
    pub async fn resolve(&self, key: &QueryKey) -> Result<Answer, String> {
        let lookup = async {
            match key.kind {
                RecordKind::A => self.addresses(&key.query).await.map(|(ips, ttl)| {
                    let targets = ips.into_iter().map(|ip| Target { ip, port: None, weight: None }).collect();
                    Answer::new(targets, ttl)
                }),
                RecordKind::Srv => self.srv(&key.query).await,
            }
        };
        match tokio::time::timeout(self.timeout, lookup).await {
            Ok(Ok(answer)) if answer.targets.is_empty() => Err("no records".to_owned()),
            Ok(outcome) => outcome,
            Err(_) => Err(format!("no answer within {}", humantime::format_duration(self.timeout))),
        }
    }

    async fn addresses(&self, name: &str) -> Result<(Vec<std::net::IpAddr>, Duration), String> {
        let lookup = self.inner.lookup_ip(name).await.map_err(describe)?;
        Ok((lookup.iter().collect(), ttl_of(lookup.valid_until())))
    }

    async fn srv(&self, name: &str) -> Result<Answer, String> {
        let lookup = self.inner.srv_lookup(name).await.map_err(describe)?;
        let mut ttl = ttl_of(lookup.as_lookup().valid_until());
        let mut targets = Vec::new();
        for record in lookup.iter() {
            let target = record.target().to_utf8();
            // A target that does not resolve is left out; the others serve.
            let Ok((ips, target_ttl)) = self.addresses(&target).await else { continue };
            ttl = ttl.min(target_ttl);
            let (port, weight) = (Some(record.port()), Some(record.weight()));
            targets.extend(ips.into_iter().map(|ip| Target { ip, port, weight }));
        }
        Ok(Answer::new(targets, ttl))
    }
}

fn ttl_of(valid_until: std::time::Instant) -> Duration {
    valid_until.saturating_duration_since(std::time::Instant::now())
}

fn describe(err: ResolveError) -> String {
    if err.is_no_records_found() {
        "no records".to_owned()
    } else {
        err.to_string()
    }
}
