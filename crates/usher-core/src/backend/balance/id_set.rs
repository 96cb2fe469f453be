//! A set of server ids as a two-level bitset: insert, remove and "the next
//! id from here" without allocating once it has grown to the number of
//! servers (a `BTreeSet` allocates and frees nodes as ids come and go,
//! which the path of every session must not do). A summary word marks
//! which of 64 words have a bit set, so the next-id query skips 4 096
//! empty ids per summary bit it reads: O(n / 4 096) words at worst, 3 for
//! 10 000 servers — a walk over a sparse set costs per id it finds, not
//! per server.

#[derive(Debug, Clone, Default)]
pub(crate) struct IdSet {
    words: Vec<u64>,
    /// Bit `w % 64` of `summary[w / 64]` is set when `words[w]` is not 0.
    summary: Vec<u64>,
}

impl IdSet {
    pub fn insert(&mut self, id: usize) {
        let word = id / 64;
        if self.words.len() <= word {
            self.words.resize(word + 1, 0);
            self.summary.resize(word / 64 + 1, 0);
        }
        self.words[word] |= 1 << (id % 64);
        self.summary[word / 64] |= 1 << (word % 64);
    }

    pub fn remove(&mut self, id: usize) {
        let word = id / 64;
        if let Some(w) = self.words.get_mut(word) {
            *w &= !(1 << (id % 64));
            if *w == 0 {
                self.summary[word / 64] &= !(1 << (word % 64));
            }
        }
    }

    pub fn contains(&self, id: usize) -> bool {
        self.words.get(id / 64).is_some_and(|w| w & (1 << (id % 64)) != 0)
    }

    /// The smallest id in the set at or after `from`.
    pub fn next_from(&self, from: usize) -> Option<usize> {
        let word = from / 64;
        let bits = self.words.get(word)? & (u64::MAX << (from % 64));
        if bits != 0 {
            return Some(word * 64 + bits.trailing_zeros() as usize);
        }
        let word = self.next_word_from(word + 1)?;
        Some(word * 64 + self.words[word].trailing_zeros() as usize)
    }

    /// The first non-empty word at or after `from`, found by the summary.
    fn next_word_from(&self, from: usize) -> Option<usize> {
        let mut group = from / 64;
        let mut bits = self.summary.get(group)? & (u64::MAX << (from % 64));
        loop {
            if bits != 0 {
                return Some(group * 64 + bits.trailing_zeros() as usize);
            }
            group += 1;
            bits = *self.summary.get(group)?;
        }
    }

    /// Every id in the set, in order.
    #[cfg(test)]
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        std::iter::successors(self.next_from(0), |&id| self.next_from(id + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

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

    #[test]
    fn a_sparse_set_is_walked_across_summary_groups() {
        // Ids 4 096 apart sit in different summary words: the walk must
        // cross empty groups, and an emptied word must leave the summary.
        let mut s = IdSet::default();
        for id in [0, 63, 4_095, 4_096, 9_999, 20_000] {
            s.insert(id);
        }
        s.remove(4_096);
        s.remove(63);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0, 4_095, 9_999, 20_000]);
        assert_eq!(s.next_from(1), Some(4_095));
        assert_eq!(s.next_from(4_096), Some(9_999));
        assert_eq!(s.next_from(10_000), Some(20_000));
        assert_eq!(s.next_from(20_001), None);
        assert_eq!(s.next_from(1_000_000), None);
        s.remove(20_000);
        assert_eq!(s.next_from(10_000), None, "an emptied word is cleared from the summary");
    }

    #[test]
    fn agrees_with_an_ordered_set_through_inserts_and_removes() {
        // A fixed pseudo-random history over 20 000 ids, checked step by
        // step against `BTreeSet::range`.
        let mut s = IdSet::default();
        let mut reference = BTreeSet::new();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let id = (x % 20_000) as usize;
            if x & (1 << 40) == 0 {
                s.insert(id);
                reference.insert(id);
            } else {
                s.remove(id);
                reference.remove(&id);
            }
            let from = ((x >> 20) % 20_100) as usize;
            assert_eq!(s.next_from(from), reference.range(from..).next().copied(), "next from {from}");
        }
        assert!(s.iter().eq(reference.iter().copied()));
    }
}
