//! Reaching the admin API: where it is (`--admin URL`, or `admin.bind` of
//! the configuration layers the daemon reads), with which token, and the
//! one request `usher status` makes, `GET /stats`.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use super::stats_view::StatsView;

/// A request that takes longer has met a stuck daemon: say so rather than hang.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the admin API is and how to authenticate.
pub struct AdminTarget {
    /// Base URL without a trailing slash, such as `http://127.0.0.1:9900`.
    pub base: String,
    /// Bearer token; `None` when the API has none.
    pub token: Option<String>,
    agent: ureq::Agent,
}

/// Why `GET /stats` gave no figures. Every message names the URL asked.
#[derive(Debug)]
pub enum FetchError {
    /// Nothing answered at the address (refused, unreachable, timed out).
    Unreachable { url: String, reason: String },
    /// The API wants a token that was not given, or another one.
    Unauthorized { url: String },
    /// Something answered, but not with the figures.
    BadAnswer { url: String, reason: String },
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::Unreachable { url, reason } => write!(
                f,
                "cannot reach the admin API at {url}: {reason} (is usher running, with admin.bind set? \
                 pass --admin URL to ask another address)"
            ),
            FetchError::Unauthorized { url } => write!(
                f,
                "the admin API at {url} refused the request (401): pass its admin.token with --token \
                 or the USHER_ADMIN_TOKEN environment variable"
            ),
            FetchError::BadAnswer { url, reason } => {
                write!(f, "unexpected answer from the admin API at {url}: {reason}")
            }
        }
    }
}

impl AdminTarget {
    pub fn new(base: String, token: Option<String>) -> AdminTarget {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(REQUEST_TIMEOUT))
            // Statuses are answers to explain, not transport failures.
            .http_status_as_error(false)
            // The admin API is a local address: never route it through the
            // HTTP_PROXY an operator's shell may export.
            .proxy(None)
            .build();
        AdminTarget { base: base.trim_end_matches('/').to_owned(), token, agent: config.into() }
    }

    /// `--admin` as given: a URL, or a bare `HOST:PORT` taken as `http://`.
    pub fn from_url(url: &str, token: Option<String>) -> AdminTarget {
        let url = url.trim();
        let base = if url.contains("://") { url.to_owned() } else { format!("http://{url}") };
        AdminTarget::new(base, token)
    }

    /// The configured `admin.bind`. An unspecified address (`0.0.0.0`,
    /// `[::]`) listens on every interface; it is asked on loopback.
    pub fn from_bind(bind: SocketAddr, token: Option<String>) -> AdminTarget {
        let mut address = bind;
        if address.ip().is_unspecified() {
            address.set_ip(match bind {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        AdminTarget::new(format!("http://{address}"), token)
    }

    /// `GET /stats`, parsed.
    pub fn stats(&self) -> Result<StatsView, FetchError> {
        let url = format!("{}/stats", self.base);
        let mut request = self.agent.get(&url);
        if let Some(token) = &self.token {
            request = request.header("Authorization", &format!("Bearer {token}"));
        }
        let mut reply = request.call().map_err(|err| match err {
            ureq::Error::Io(_)
            | ureq::Error::Timeout(_)
            | ureq::Error::HostNotFound
            | ureq::Error::ConnectionFailed => FetchError::Unreachable { url: url.clone(), reason: err.to_string() },
            other => FetchError::BadAnswer { url: url.clone(), reason: other.to_string() },
        })?;
        let status = reply.status().as_u16();
        if status == 401 {
            return Err(FetchError::Unauthorized { url });
        }
        let body = reply
            .body_mut()
            .read_to_string()
            .map_err(|err| FetchError::BadAnswer { url: url.clone(), reason: err.to_string() })?;
        if status != 200 {
            return Err(FetchError::BadAnswer { url, reason: format!("status {status}: {}", body.trim()) });
        }
        serde_json::from_str(&body)
            .map_err(|err| FetchError::BadAnswer { url, reason: format!("not the /stats JSON ({err})") })
    }
}
