//! Entries by id (one backend's servers), stored in shared chunks of fixed
//! size, copied on write. Two costs that grew with the size of a backend
//! and were paid on the actors' thread, where every session waits for
//! them, become costs per chunk:
//!
//! - Growing: a reload that adds a few servers to a backend of thousands
//!   adds at most a chunk; a `Vec` doubled and copied every entry into
//!   fresh memory (1.5 MB of counters for 10 000 servers: over a
//!   millisecond with the page faults).
//! - Reading: a snapshot for `/stats` clones the chunk pointers, not the
//!   entries; the first write to a chunk after a snapshot copies that
//!   chunk only. Cloning 10 000 servers' counters and wait histograms for
//!   every read held the thread for 10–20 ms.

use std::ops::Index;
use std::sync::Arc;

/// Entries per chunk: small enough that adding or copying one is cheap,
/// large enough that a 10 000-server backend has 40 chunk pointers.
const CHUNK: usize = 256;

/// Entries `0..len`, each `T::default()` until written. `clone` is a
/// snapshot in time linear in the number of chunks.
#[derive(Debug, Clone)]
pub struct ChunkedTable<T> {
    chunks: Vec<Arc<Vec<T>>>,
    len: usize,
}

impl<T> Default for ChunkedTable<T> {
    fn default() -> Self {
        ChunkedTable { chunks: Vec::new(), len: 0 }
    }
}

impl<T: Clone + Default> ChunkedTable<T> {
    /// Room for ids `0..len`; never shrinks (ids are stable).
    pub fn grow_to(&mut self, len: usize) {
        while self.chunks.len() * CHUNK < len {
            self.chunks.push(Arc::new(vec![T::default(); CHUNK]));
        }
        self.len = self.len.max(len);
    }

    /// The entry, its chunk copied first if a snapshot shares it.
    pub fn get_mut(&mut self, id: usize) -> Option<&mut T> {
        if id >= self.len {
            return None;
        }
        Some(&mut Arc::make_mut(&mut self.chunks[id / CHUNK])[id % CHUNK])
    }
}

impl<T> ChunkedTable<T> {
    /// How many ids it has room for.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, id: usize) -> Option<&T> {
        (id < self.len).then(|| &self.chunks[id / CHUNK][id % CHUNK])
    }

    /// In id order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flat_map(|chunk| chunk.iter()).take(self.len)
    }
}

impl<T> Index<usize> for ChunkedTable<T> {
    type Output = T;

    fn index(&self, id: usize) -> &T {
        self.get(id).unwrap_or_else(|| panic!("id {id} out of a table of {}", self.len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growing_keeps_every_entry_where_it_was() {
        let mut table = ChunkedTable::<u64>::default();
        table.grow_to(10_000);
        for id in 0..10_000 {
            *table.get_mut(id).unwrap() = id as u64;
        }
        let first: *const u64 = &table[0];
        let last: *const u64 = &table[9_999];
        table.grow_to(10_007);
        // Not moved: nothing was copied into new memory.
        assert_eq!((first, last), (&table[0] as *const u64, &table[9_999] as *const u64));
        assert_eq!(table.iter().count(), 10_007);
        assert!(table.iter().take(10_000).copied().eq(0..10_000));
        assert!(table.iter().skip(10_000).all(|&v| v == 0), "new ids start at the default");
    }

    #[test]
    fn ids_past_the_length_are_absent_even_inside_the_last_chunk() {
        let mut table = ChunkedTable::<u64>::default();
        assert_eq!(table.iter().count(), 0);
        table.grow_to(3);
        assert_eq!((table.get(2), table.get(3)), (Some(&0), None));
        assert!(table.get_mut(3).is_none());
        assert_eq!(table.iter().count(), 3);
        table.grow_to(1);
        assert_eq!(table.iter().count(), 3, "a table never shrinks");
    }

    /// A snapshot copies no entry, and writes after it copy only the chunk
    /// they touch: the snapshot keeps what it saw.
    #[test]
    fn a_snapshot_shares_every_chunk_until_one_is_written() {
        let mut table = ChunkedTable::<u64>::default();
        table.grow_to(3 * CHUNK);
        *table.get_mut(1).unwrap() = 7;
        let snapshot = table.clone();
        assert!(table.chunks.iter().zip(&snapshot.chunks).all(|(a, b)| Arc::ptr_eq(a, b)));
        *table.get_mut(CHUNK + 5).unwrap() = 9;
        assert_eq!((snapshot[CHUNK + 5], table[CHUNK + 5]), (0, 9));
        assert_eq!((snapshot[1], table[1]), (7, 7));
        let shared: Vec<bool> = table.chunks.iter().zip(&snapshot.chunks).map(|(a, b)| Arc::ptr_eq(a, b)).collect();
        assert_eq!(shared, [true, false, true], "only the written chunk was copied");
    }
}
