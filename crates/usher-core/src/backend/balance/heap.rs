//! A binary min-heap of servers that knows where each one is, so a
//! server's key can change or the server leave in O(log n) — without
//! allocating once its vectors have grown to the number of servers (an
//! ordered `BTreeSet` allocates and frees nodes as it splits and merges,
//! which a pick must not do).

/// Marks a server that is not in the heap.
const ABSENT: usize = usize::MAX;

#[derive(Debug, Clone)]
pub(crate) struct IndexedHeap<K> {
    /// (key, server id), a min-heap by key then id.
    heap: Vec<(K, usize)>,
    /// Where each server id is in `heap` (`ABSENT` if it is not).
    at: Vec<usize>,
    /// Entries taken out while looking for the first that fits, put back
    /// after (kept to reuse its capacity).
    set_aside: Vec<(K, usize)>,
}

impl<K> Default for IndexedHeap<K> {
    fn default() -> Self {
        IndexedHeap { heap: Vec::new(), at: Vec::new(), set_aside: Vec::new() }
    }
}

impl<K: Ord + Copy> IndexedHeap<K> {
    /// Puts `id` in with `key`, or moves it there if it is in already.
    pub fn set(&mut self, id: usize, key: K) {
        if self.at.len() <= id {
            self.at.resize(id + 1, ABSENT);
        }
        match self.at[id] {
            ABSENT => {
                self.heap.push((key, id));
                self.at[id] = self.heap.len() - 1;
                self.up(self.heap.len() - 1);
            }
            i => {
                self.heap[i].0 = key;
                let i = self.up(i);
                self.down(i);
            }
        }
    }

    /// Takes `id` out, if it is in.
    pub fn remove(&mut self, id: usize) {
        let Some(&i) = self.at.get(id) else { return };
        if i == ABSENT {
            return;
        }
        self.at[id] = ABSENT;
        let last = self.heap.len() - 1;
        if i != last {
            self.heap.swap(i, last);
            self.at[self.heap[i].1] = i;
        }
        self.heap.pop();
        if i < self.heap.len() {
            let i = self.up(i);
            self.down(i);
        }
    }

    /// The least (key, id), if any.
    pub fn first(&self) -> Option<(K, usize)> {
        self.heap.first().copied()
    }

    /// Whether `id` is in.
    pub fn contains(&self, id: usize) -> bool {
        self.at.get(id).is_some_and(|&i| i != ABSENT)
    }

    /// The first server in key order that `fits`: O((k + 1) log n) where
    /// k is the number of servers before it that do not fit.
    pub fn first_that(&mut self, fits: impl Fn(usize) -> bool) -> Option<(K, usize)> {
        let mut found = None;
        while let Some(&(key, id)) = self.heap.first() {
            if fits(id) {
                found = Some((key, id));
                break;
            }
            self.remove(id);
            self.set_aside.push((key, id));
        }
        while let Some((key, id)) = self.set_aside.pop() {
            self.set(id, key);
        }
        found
    }

    fn less(&self, a: usize, b: usize) -> bool {
        (self.heap[a].0, self.heap[a].1) < (self.heap[b].0, self.heap[b].1)
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        self.at[self.heap[a].1] = a;
        self.at[self.heap[b].1] = b;
    }

    fn up(&mut self, mut i: usize) -> usize {
        while i > 0 {
            let parent = (i - 1) / 2;
            if !self.less(i, parent) {
                break;
            }
            self.swap(i, parent);
            i = parent;
        }
        i
    }

    fn down(&mut self, mut i: usize) {
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut min = i;
            if l < self.heap.len() && self.less(l, min) {
                min = l;
            }
            if r < self.heap.len() && self.less(r, min) {
                min = r;
            }
            if min == i {
                return;
            }
            self.swap(i, min);
            i = min;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_key_order_through_changes_and_removals() {
        let mut h = IndexedHeap::default();
        for (id, key) in [(0, 5u32), (1, 3), (2, 9), (3, 3), (4, 1)] {
            h.set(id, key);
        }
        h.set(4, 7);
        h.remove(1);
        h.set(2, 0);
        let mut order = Vec::new();
        while let Some((_, id)) = h.first_that(|_| true) {
            order.push(id);
            h.remove(id);
        }
        assert_eq!(order, vec![2, 3, 0, 4]);
    }

    #[test]
    fn first_that_skips_and_puts_back() {
        let mut h = IndexedHeap::default();
        for id in 0..6 {
            h.set(id, id as u32);
        }
        assert_eq!(h.first_that(|id| id >= 3), Some((3, 3)));
        assert_eq!(h.first_that(|_| true), Some((0, 0)), "the skipped ones are back");
        let mut order = Vec::new();
        while let Some((_, id)) = h.first_that(|_| true) {
            order.push(id);
            h.remove(id);
        }
        assert_eq!(order, vec![0, 1, 2, 3, 4, 5]);
    }
}
