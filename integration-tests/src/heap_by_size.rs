//! The pieces of the tests that count what a waiting or idle session keeps
//! on the broker's heap (`queued_memory.rs`, `idle_memory.rs`): a global
//! allocator that keeps, for each allocation size, how many such blocks are
//! live, a report of the blocks a batch of sessions added, and a broker
//! whose log drops every record. Each test binary declares its own
//! `#[global_allocator]` of [`LiveBySize`] and is alone in its file: other
//! tests would allocate meanwhile.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};

use usher_core::{BrokerHandle, Extensions};

use crate::DEADLINE;

/// Sizes counted one by one; larger blocks share the last counter.
pub const SIZES: usize = 8192;

/// The system allocator, with the number of live blocks of each size.
pub struct LiveBySize {
    live: [AtomicI64; SIZES + 1],
    /// Live bytes, all sizes.
    bytes: AtomicI64,
}

/// Live blocks by size and live bytes at one moment.
pub struct HeapSnapshot {
    blocks: Vec<i64>,
    bytes: i64,
}

impl LiveBySize {
    pub const fn new() -> LiveBySize {
        LiveBySize { live: [const { AtomicI64::new(0) }; SIZES + 1], bytes: AtomicI64::new(0) }
    }

    fn counted(&self, size: usize, blocks: i64) {
        self.live[size.min(SIZES)].fetch_add(blocks, Ordering::Relaxed);
        self.bytes.fetch_add(blocks * size as i64, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HeapSnapshot {
        HeapSnapshot {
            blocks: self.live.iter().map(|c| c.load(Ordering::Relaxed)).collect(),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }
}

impl Default for LiveBySize {
    fn default() -> LiveBySize {
        LiveBySize::new()
    }
}

impl HeapSnapshot {
    /// Prints the blocks each of `count` sessions added since `before`, by
    /// size (`what` names one session), and returns the bytes per session.
    pub fn per_session_since(&self, before: &HeapSnapshot, count: usize, what: &str) -> f64 {
        println!("live blocks per {what}, by size:");
        for (size, (a, b)) in self.blocks.iter().zip(&before.blocks).enumerate() {
            let blocks = (a - b) as f64 / count as f64;
            if blocks.abs() >= 0.01 {
                let shown = if size == SIZES { format!(">={SIZES}") } else { size.to_string() };
                println!("  {shown:>6} B × {blocks:.2}");
            }
        }
        let bytes = (self.bytes - before.bytes) as f64 / count as f64;
        println!("heap per {what}: {bytes:.0} B ({count} of them)");
        bytes
    }
}

// A global allocator is unsafe by its trait's contract; this one only
// counts and forwards every call to the system allocator unchanged.
// (stats_alloc, used elsewhere, counts totals, not sizes.)
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for LiveBySize {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.counted(layout.size(), 1);
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        self.counted(layout.size(), -1);
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        self.counted(layout.size(), -1);
        self.counted(new_size, 1);
        System.realloc(ptr, layout, new_size)
    }
}

/// Starts a broker whose log drops every record, as the daemon's drops
/// those under its level before formatting them (a capturing log would
/// count its own copies of per-session debug records here).
pub fn start_quiet_broker(toml: &str) -> (BrokerHandle, SocketAddr) {
    let settings = usher_core::config::from_toml_str(toml).expect("valid configuration");
    let listeners = usher_core::bind_all(&settings).expect("bind the frontend");
    let addr = listeners.0.values().flatten().next().expect("one listener").local_addr().expect("address");
    let (started, handle) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let extensions = Extensions {
            on_start: Some(Box::new(move |handle: BrokerHandle| {
                let _ = started.send(handle);
            })),
            ..Extensions::default()
        };
        let log = slog::Logger::root(slog::Discard, slog::o!());
        actix_rt::System::new().block_on(usher_core::run(settings, listeners, log, extensions, std::future::pending()))
    });
    (handle.recv_timeout(DEADLINE).expect("the broker started"), addr)
}
