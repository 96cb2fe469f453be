//! A typed callback through which an actor of a lower layer tells whoever
//! wired it what happened — a server changed state, a listener paused —
//! without naming the layer that listens (the broker wires these into the
//! observers' event stream). Calling it never blocks: the listener only
//! tries to post, and an unset one does nothing.

use std::fmt;
use std::sync::Arc;

/// Called with each `T` as it happens, on the caller's thread.
pub struct Notify<T>(Option<Arc<dyn Fn(T) + Send + Sync>>);

impl<T> Notify<T> {
    /// Tells `f` of every `T`. `f` must return at once (post, count, never
    /// wait): it runs inside the actor that had the news.
    pub fn new(f: impl Fn(T) + Send + Sync + 'static) -> Notify<T> {
        Notify(Some(Arc::new(f)))
    }

    /// Nobody listens.
    pub fn none() -> Notify<T> {
        Notify(None)
    }

    /// Someone listens: a publisher builds costly news only then.
    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }

    pub fn send(&self, news: T) {
        if let Some(f) = &self.0 {
            f(news);
        }
    }
}

impl<T> Clone for Notify<T> {
    fn clone(&self) -> Notify<T> {
        Notify(self.0.clone())
    }
}

impl<T> Default for Notify<T> {
    fn default() -> Notify<T> {
        Notify::none()
    }
}

impl<T> fmt::Debug for Notify<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_set() { "Notify(set)" } else { "Notify(none)" })
    }
}
