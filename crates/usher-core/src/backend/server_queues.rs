//! Each server's own queue, by server id: where the sessions pinned to one
//! server (by a hash, a `first` pick, a retry's choice) wait for it. Most
//! servers never queue a session of their own, so a queue is allocated
//! when its first session joins: an empty one costs a pointer, not the
//! 104 bytes of a `WaitQueue`. A reload that adds servers to a backend of
//! 10 000 copied 1 MB of empty queues into fresh memory on the actors'
//! thread (most of its page faults); now 80 KB.

use super::wait_queue::WaitQueue;

pub struct ServerQueues<W> {
    queues: Vec<Option<Box<WaitQueue<W>>>>,
    /// Whether queues share their turns fairly between sources: a queue
    /// allocated later takes it too.
    fair: bool,
}

impl<W> ServerQueues<W> {
    /// `servers` servers, none with a queue yet.
    pub fn new(servers: usize) -> ServerQueues<W> {
        ServerQueues { queues: (0..servers).map(|_| None).collect(), fair: false }
    }

    /// One more server, the next id.
    pub fn add_server(&mut self) {
        self.queues.push(None);
    }

    pub fn set_fair(&mut self, on: bool) {
        self.fair = on;
        for queue in self.queues.iter_mut().flatten() {
            queue.set_fair(on);
        }
    }

    /// Sessions waiting for server `server` (0 for an unknown id).
    pub fn len(&self, server: usize) -> usize {
        self.get(server).map_or(0, |q| q.len())
    }

    pub fn get(&self, server: usize) -> Option<&WaitQueue<W>> {
        self.queues.get(server)?.as_deref()
    }

    pub fn get_mut(&mut self, server: usize) -> Option<&mut WaitQueue<W>> {
        self.queues.get_mut(server)?.as_deref_mut()
    }

    /// Server `server`'s queue, allocated if it has none yet.
    ///
    /// # Panics
    /// For an id that was never added (a bug: ids come from the balancer).
    pub fn queue_to_join(&mut self, server: usize) -> &mut WaitQueue<W> {
        let fair = self.fair;
        self.queues[server].get_or_insert_with(|| {
            let mut queue = Box::<WaitQueue<W>>::default();
            queue.set_fair(fair);
            queue
        })
    }

    /// The queues allocated so far (empty ones included), in no order that matters.
    pub fn allocated(&self) -> impl Iterator<Item = &WaitQueue<W>> {
        self.queues.iter().flatten().map(|q| &**q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_exists_once_a_session_joins_it_and_takes_the_fair_setting() {
        let mut queues = ServerQueues::<u32>::new(2);
        queues.set_fair(true);
        queues.add_server();
        assert_eq!((queues.allocated().count(), queues.len(2), queues.len(9)), (0, 0, 0));
        assert!(queues.get(1).is_none() && queues.get_mut(1).is_none());
        let fresh = queues.queue_to_join(2);
        assert!(fresh.is_empty());
        assert!(fresh.is_fair(), "a queue allocated later shares turns as the others do");
        assert_eq!(queues.allocated().count(), 1);
    }
}
