//! The configuration's "0 means unlimited" (or "off"), as a type, so that
//! code inside the backend says which bounds exist instead of testing for 0.

use std::num::NonZeroU32;

/// An upper bound that may be absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limit(Option<NonZeroU32>);

impl Limit {
    /// From a configuration value, where 0 means no limit.
    pub fn from_config(n: u32) -> Limit {
        Limit(NonZeroU32::new(n))
    }

    /// The bound, if there is one.
    pub fn get(self) -> Option<u32> {
        self.0.map(NonZeroU32::get)
    }

    pub fn is_unlimited(self) -> bool {
        self.0.is_none()
    }

    /// `n` reached the bound: nothing more may join.
    pub fn reached_by(self, n: usize) -> bool {
        self.get().is_some_and(|max| n >= max as usize)
    }

    /// The looser of two bounds (no bound beats any).
    pub fn loosest(self, other: Limit) -> Limit {
        match (self.get(), other.get()) {
            (Some(a), Some(b)) => Limit::from_config(a.max(b)),
            _ => Limit::from_config(0),
        }
    }

    /// `n` is over the bound.
    pub fn exceeded_by(self, n: usize) -> bool {
        self.get().is_some_and(|max| n > max as usize)
    }
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.get() {
            Some(max) => write!(f, "{max}"),
            None => f.write_str("unlimited"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_no_limit() {
        let none = Limit::from_config(0);
        assert!(none.is_unlimited() && !none.reached_by(usize::MAX) && !none.exceeded_by(usize::MAX));
        let two = Limit::from_config(2);
        assert_eq!(two.get(), Some(2));
        assert!(!two.reached_by(1) && two.reached_by(2));
        assert!(!two.exceeded_by(2) && two.exceeded_by(3));
    }
}
