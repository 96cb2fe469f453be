//! How many frontends and backends a proxy is configured with, and which
//! servers each backend holds: the same shape for usher and HAProxy, so a
//! comparison of a proxy holding many frontends and backends against one
//! holding a single pair measures the proxies, not their configurations.
//!
//! The load always goes to frontend [`LOAD_FRONTEND`], whose default backend
//! is [`LOAD_BACKEND`]; the other frontends and backends are configured,
//! listening and idle.

use std::net::SocketAddr;

/// The frontend the bench sends its load to (usher's `serve-usher` reports
/// this one's address).
pub const LOAD_FRONTEND: &str = "bench";
/// That frontend's default backend; the per-case configuration extras
/// (SNI rule, queue discipline) name it.
pub const LOAD_BACKEND: &str = "app";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub frontends: usize,
    pub backends: usize,
}

/// One frontend of the layout and its default backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frontend {
    pub name: String,
    pub backend: String,
}

impl Layout {
    /// One frontend, one backend holding every server.
    pub const SINGLE: Layout = Layout { frontends: 1, backends: 1 };

    /// Each backend's name and servers: `servers` split into equal runs,
    /// the first [`LOAD_BACKEND`]. Fails unless they split evenly, so no
    /// backend of a comparison is smaller than the loaded one.
    pub fn backends<'a>(&self, servers: &'a [SocketAddr]) -> anyhow::Result<Vec<(String, &'a [SocketAddr])>> {
        anyhow::ensure!(
            self.backends > 0 && self.frontends > 0 && self.frontends <= self.backends,
            "a layout needs at least one backend per frontend, not {self:?}"
        );
        anyhow::ensure!(
            !servers.is_empty() && servers.len().is_multiple_of(self.backends),
            "{} servers do not split into {} backends",
            servers.len(),
            self.backends
        );
        Ok(servers.chunks(servers.len() / self.backends).enumerate().map(|(i, run)| (backend_name(i), run)).collect())
    }

    /// Each frontend's name and default backend: [`LOAD_FRONTEND`] uses
    /// [`LOAD_BACKEND`], frontend `j` the backend `j × backends / frontends`,
    /// so frontends spread over the backends and no two share one.
    pub fn frontends(&self) -> Vec<Frontend> {
        (0..self.frontends)
            .map(|j| Frontend {
                name: if j == 0 { LOAD_FRONTEND.to_owned() } else { format!("f{j}") },
                backend: backend_name(j * self.backends / self.frontends),
            })
            .collect()
    }
}

fn backend_name(i: usize) -> String {
    if i == 0 {
        LOAD_BACKEND.to_owned()
    } else {
        format!("b{i}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers(n: u16) -> Vec<SocketAddr> {
        (0..n).map(|i| SocketAddr::from(([127, 0, 0, 1], 4000 + i))).collect()
    }

    #[test]
    fn the_loaded_frontend_uses_the_first_servers_and_the_others_spread_out() {
        let all = servers(2_000);
        let layout = Layout { frontends: 50, backends: 500 };
        let backends = layout.backends(&all).unwrap();
        assert_eq!(backends.len(), 500);
        assert!(backends.iter().all(|(_, s)| s.len() == 4));
        assert_eq!((backends[0].0.as_str(), backends[0].1), (LOAD_BACKEND, &all[..4]));
        assert_eq!((backends[499].0.as_str(), backends[499].1), ("b499", &all[1_996..]));
        let frontends = layout.frontends();
        assert_eq!(frontends[0], Frontend { name: LOAD_FRONTEND.into(), backend: LOAD_BACKEND.into() });
        assert_eq!(frontends[1], Frontend { name: "f1".into(), backend: "b10".into() });
        assert_eq!(frontends[49].backend, "b490");
        let mut used: Vec<&str> = frontends.iter().map(|f| f.backend.as_str()).collect();
        used.dedup();
        assert_eq!(used.len(), 50, "no two frontends share a backend");
    }

    #[test]
    fn single_is_one_pair_and_uneven_splits_are_refused() {
        let all = servers(4);
        assert_eq!(Layout::SINGLE.backends(&all).unwrap(), vec![(LOAD_BACKEND.to_owned(), &all[..])]);
        assert_eq!(Layout::SINGLE.frontends().len(), 1);
        assert!(Layout { frontends: 1, backends: 3 }.backends(&all).is_err());
        assert!(Layout { frontends: 2, backends: 1 }.backends(&all).is_err());
        assert!(Layout::SINGLE.backends(&[]).is_err());
    }
}
