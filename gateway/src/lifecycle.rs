//! Process-wide request bookkeeping: how many requests are in flight and whether the
//! gateway is shutting down, shared by the proxy (each request counts itself), the
//! admin listener and the drain watcher that ends the process once nothing is left.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// Process-wide request bookkeeping shared by the proxy and the drain watcher.
#[derive(Default)]
pub struct Lifecycle {
    in_flight: AtomicUsize,
    shutting_down: AtomicBool,
}

impl Lifecycle {
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }
}

/// Counts one request in progress, so a graceful shutdown can end as soon as none is.
pub struct InFlight(Arc<Lifecycle>);

impl InFlight {
    pub fn new(lifecycle: &Arc<Lifecycle>) -> Self {
        lifecycle.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(Arc::clone(lifecycle))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}
