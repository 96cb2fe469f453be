//! The file-descriptor budget: how many sessions the process can hold.
//!
//! Each session needs two fds (client and server); listeners, the runtime's
//! own fds and a spare margin come first. At start the soft RLIMIT_NOFILE is
//! raised to the hard limit when allowed. An explicit `global.maxconn` that
//! does not fit is refused with a clear error rather than silently lowered
//! (an operator would not know their limit is not the one in force);
//! `global.maxconn = 0` takes what fits.

use std::fmt;
use std::num::NonZeroU32;

/// Fds kept free for everything that is not a session (logs, admin, reload).
pub const FD_SPARE: u64 = 16;
/// Fds one session holds: the client socket and the server socket.
pub const FDS_PER_SESSION: u64 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct FdBudget {
    /// Soft RLIMIT_NOFILE after raising it.
    pub nofile: u64,
    pub hard: u64,
    /// Fds open when the budget was taken (listeners included).
    pub in_use: u64,
    pub spare: u64,
    /// Sessions that fit: (nofile - in_use - spare) / 2.
    pub sessions: u64,
}

impl FdBudget {
    pub fn compute(nofile: u64, hard: u64, in_use: u64) -> FdBudget {
        let sessions = nofile.saturating_sub(in_use).saturating_sub(FD_SPARE) / FDS_PER_SESSION;
        FdBudget { nofile, hard, in_use, spare: FD_SPARE, sessions }
    }

    /// Raises the soft limit to the hard one (when allowed) and measures.
    pub fn measure() -> std::io::Result<FdBudget> {
        let _ = rlimit::increase_nofile_limit(u64::MAX);
        let (soft, hard) = rlimit::Resource::NOFILE.get()?;
        let in_use = std::fs::read_dir("/proc/self/fd").map(|d| d.count() as u64).unwrap_or(0);
        Ok(FdBudget::compute(soft, hard, in_use))
    }

    /// The global session limit to run with: `configured`, or what fits when
    /// it is 0. Errors when `configured` does not fit.
    pub fn effective_maxconn(&self, configured: Option<NonZeroU32>) -> Result<u32, FdBudgetError> {
        let fits = self.sessions.min(u64::from(u32::MAX)) as u32;
        let too_many = FdBudgetError { configured: configured.map_or(0, NonZeroU32::get), budget: *self };
        match configured {
            None if fits == 0 => Err(too_many),
            None => Ok(fits),
            Some(n) if u64::from(n.get()) <= self.sessions => Ok(n.get()),
            Some(_) => Err(too_many),
        }
    }
}

/// `global.maxconn` does not fit the fd budget.
#[derive(Debug, Clone, Copy)]
pub struct FdBudgetError {
    pub configured: u32,
    pub budget: FdBudget,
}

impl fmt::Display for FdBudgetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.budget;
        let needed = u64::from(self.configured) * FDS_PER_SESSION + b.in_use + b.spare;
        write!(
            f,
            "global.maxconn = {} needs {needed} file descriptors ({FDS_PER_SESSION} per session + {} in use + {} spare) \
             but RLIMIT_NOFILE is {} (hard {}); raise the limit (ulimit -n, systemd LimitNOFILE=) or set \
             global.maxconn to at most {} (0 = what fits)",
            self.configured, b.in_use, b.spare, b.nofile, b.hard, b.sessions
        )
    }
}

impl std::error::Error for FdBudgetError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_and_effective_maxconn() {
        let b = FdBudget::compute(64, 64, 12);
        assert_eq!(b.sessions, (64 - 12 - FD_SPARE) / 2);
        assert_eq!(b.effective_maxconn(None).unwrap(), 18);
        assert_eq!(b.effective_maxconn(NonZeroU32::new(10)).unwrap(), 10);
        let err = b.effective_maxconn(NonZeroU32::new(100)).unwrap_err().to_string();
        assert!(err.contains("global.maxconn = 100") && err.contains("at most 18"), "{err}");
        assert!(FdBudget::compute(20, 20, 10).effective_maxconn(None).is_err());
    }
}
