//! A set of server ids as a bitset: insert, remove and "the next id from
//! here" without allocating once it has grown to the number of servers (a
//! `BTreeSet` allocates and frees nodes as ids come and go, which the
//! path of every session must not do). The next-id query scans words:
//! O(n / 64) at worst, ~160 words for 10 000 servers.

#[derive(Debug, Clone, Default)]
pub(crate) struct IdSet {
    words: Vec<u64>,
}

impl IdSet {
    pub fn insert(&mut self, id: usize) {
        let word = id / 64;
        if self.words.len() <= word {
            self.words.resize(word + 1, 0);
        }
        self.words[word] |= 1 << (id % 64);
    }

    pub fn remove(&mut self, id: usize) {
        if let Some(w) = self.words.get_mut(id / 64) {
            *w &= !(1 << (id % 64));
        }
    }

    pub fn contains(&self, id: usize) -> bool {
        self.words.get(id / 64).is_some_and(|w| w & (1 << (id % 64)) != 0)
    }

    /// The smallest id in the set at or after `from`.
    pub fn next_from(&self, from: usize) -> Option<usize> {
        let mut word = from / 64;
        let mut bits = self.words.get(word)? & (u64::MAX << (from % 64));
        loop {
            if bits != 0 {
                return Some(word * 64 + bits.trailing_zeros() as usize);
            }
            word += 1;
            bits = *self.words.get(word)?;
        }
    }

    /// Every id in the set, in order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        std::iter::successors(self.next_from(0), |&id| self.next_from(id + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_from_walks_the_set_in_order() {
        let mut s = IdSet::default();
        for id in [3, 64, 65, 200] {
            s.insert(id);
        }
        s.remove(65);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![3, 64, 200]);
        assert_eq!(s.next_from(4), Some(64));
        assert_eq!(s.next_from(201), None);
        assert!(s.contains(200) && !s.contains(65));
    }
}
