//! One backend's per-server entries by server id, stored in chunks of
//! fixed size. A reload that adds a few servers to a backend of thousands
//! adds at most a chunk; a `Vec` would double and copy every entry into
//! fresh memory, on the actors' thread, where the copy and the page faults
//! of the new memory (1.5 MB for 10 000 servers' counters) held every
//! session for over a millisecond.

use std::ops::{Index, IndexMut};

/// Entries per chunk: small enough that one chunk is cheap to add, large
/// enough that the chunk pointers of a 10 000-server backend fit in a page.
const CHUNK: usize = 256;

/// Entries `0..len()`, each `T::default()` until written.
#[derive(Debug, Clone)]
pub struct ServerTable<T> {
    chunks: Vec<Box<[T]>>,
    len: usize,
}

impl<T> Default for ServerTable<T> {
    fn default() -> Self {
        ServerTable { chunks: Vec::new(), len: 0 }
    }
}

impl<T: Clone + Default> ServerTable<T> {
    /// Room for ids `0..len`; never shrinks (ids are stable).
    pub fn grow_to(&mut self, len: usize) {
        while self.chunks.len() * CHUNK < len {
            self.chunks.push(vec![T::default(); CHUNK].into_boxed_slice());
        }
        self.len = self.len.max(len);
    }
}

impl<T> ServerTable<T> {
    pub fn get(&self, id: usize) -> Option<&T> {
        (id < self.len).then(|| &self.chunks[id / CHUNK][id % CHUNK])
    }

    pub fn get_mut(&mut self, id: usize) -> Option<&mut T> {
        (id < self.len).then(|| &mut self.chunks[id / CHUNK][id % CHUNK])
    }

    /// In id order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.into_iter()
    }
}

impl<'a, T> IntoIterator for &'a ServerTable<T> {
    type Item = &'a T;
    type IntoIter = std::iter::Take<std::iter::Flatten<std::slice::Iter<'a, Box<[T]>>>>;

    fn into_iter(self) -> Self::IntoIter {
        self.chunks.iter().flatten().take(self.len)
    }
}

impl<T> Index<usize> for ServerTable<T> {
    type Output = T;

    fn index(&self, id: usize) -> &T {
        self.get(id).unwrap_or_else(|| panic!("server id {id} out of a table of {}", self.len))
    }
}

impl<T> IndexMut<usize> for ServerTable<T> {
    fn index_mut(&mut self, id: usize) -> &mut T {
        let len = self.len;
        self.get_mut(id).unwrap_or_else(|| panic!("server id {id} out of a table of {len}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growing_keeps_every_entry_where_it_was() {
        let mut table = ServerTable::<u64>::default();
        table.grow_to(10_000);
        for id in 0..10_000 {
            table[id] = id as u64;
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
        let mut table = ServerTable::<u64>::default();
        assert_eq!(table.iter().count(), 0);
        table.grow_to(3);
        assert_eq!((table.get(2), table.get(3)), (Some(&0), None));
        assert_eq!(table.iter().count(), 3);
        table.grow_to(1);
        assert_eq!(table.iter().count(), 3, "a table never shrinks");
    }
}
