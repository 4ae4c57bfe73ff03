//! Rate limiting: `gcra` (the arithmetic), `key` (what is counted), and `Limiter`
//! (one named limit's table of clients, bounded in memory).
//!
//! Memory: an entry whose bucket is full again is indistinguishable from no entry, so
//! `sweep` drops those at no cost in accuracy. At most `max_keys` clients are tracked;
//! while the table is full (after a sweep), new clients share one overflow bucket with
//! the same rate, so an address-spraying flood is throttled as a whole and memory stays
//! bounded.

pub mod cluster;
pub mod gcra;
pub mod key;
pub mod refused;
pub mod sweeper;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::config::{RateLimit, Scope};
pub use gcra::Decision;
use gcra::Gcra;
use key::Key;

pub struct Limiter {
    pub config: RateLimit,
    gcra: Gcra,
    /// For a limit counted in the shared store: its key prefix and its shape there.
    pub shared: Option<SharedShape>,
    table: DashMap<Key, u64>,
    /// Clock origin: TATs are nanoseconds since this instant.
    epoch: Instant,
    last_full_sweep: AtomicU64,
    /// Who this limit refused lately (the status page).
    pub refused: refused::Refusals,
}

/// How a cluster limit is counted in the store: every gateway with the same limit
/// (name, rate and burst) derives the same keys; a changed limit starts fresh, as a
/// local one does on reload.
#[derive(Debug, Clone)]
pub struct SharedShape {
    /// `rl:NAME:T_US.BURST:` (the store's key prefix is added by the store).
    pub key_prefix: String,
    /// The emission interval and the capacity (interval times burst), microseconds.
    pub t_us: u64,
    pub cap_us: u64,
}

impl SharedShape {
    fn new(config: &RateLimit, gcra: &Gcra) -> Self {
        let t_us = (gcra.t / 1000).max(1);
        SharedShape {
            key_prefix: format!("rl:{}:{t_us}.{}:", config.name, gcra.burst),
            t_us,
            cap_us: t_us.saturating_mul(u64::from(gcra.burst)),
        }
    }
}

impl Limiter {
    pub fn new(config: RateLimit) -> Self {
        let gcra = Gcra::new(config.count, config.period, config.burst);
        let shared = match config.scope {
            Scope::Cluster(_) => Some(SharedShape::new(&config, &gcra)),
            Scope::Local => None,
        };
        Limiter {
            config,
            gcra,
            shared,
            table: DashMap::new(),
            epoch: Instant::now(),
            last_full_sweep: AtomicU64::new(0),
            refused: refused::Refusals::default(),
        }
    }

    /// Nanoseconds on this limiter's clock.
    pub fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Counts one request of `key` at `now` (exact under concurrency: the entry is
    /// locked while it is read and written).
    pub fn check(&self, key: Key, now: u64) -> Decision {
        if let Some(mut tat) = self.table.get_mut(&key) {
            let (d, new) = self.gcra.check(Some(*tat), now);
            if let Some(t) = new {
                *tat = t;
            }
            return d;
        }
        let key = if self.table.len() >= self.config.max_keys && !self.make_room(now) {
            Key::Overflow
        } else {
            key
        };
        let mut entry = self.table.entry(key).or_insert(now);
        let (d, new) = self.gcra.check(Some(*entry), now);
        if let Some(t) = new {
            *entry = t;
        }
        d
    }

    /// When full: sweep idle entries (at most once per second); true if room was made.
    fn make_room(&self, now: u64) -> bool {
        let last = self.last_full_sweep.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 1_000_000_000
            && self
                .last_full_sweep
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            let removed = self.sweep(now);
            if removed > 0 {
                tracing::info!(event = "ratelimit_evicted", limit = %self.config.name, removed, "idle rate-limit entries dropped");
            } else {
                tracing::warn!(event = "ratelimit_table_full", limit = %self.config.name, max_keys = self.config.max_keys, "rate-limit table full: new clients share one bucket");
            }
        }
        self.table.len() < self.config.max_keys
    }

    /// Drops entries whose bucket is full again; returns how many.
    pub fn sweep(&self, now: u64) -> usize {
        let before = self.table.len();
        self.table.retain(|_, tat| !Gcra::is_idle(*tat, now));
        before.saturating_sub(self.table.len())
    }

    pub fn tracked(&self) -> usize {
        self.table.len()
    }

    pub fn is_exempt(&self, path: &str) -> bool {
        self.config
            .exempt_paths
            .iter()
            .any(|p| crate::routing::prefix_matches(p, path))
    }

    /// How often the background sweep should run for this limit.
    pub fn sweep_interval(&self) -> Duration {
        self.config
            .period
            .clamp(Duration::from_secs(1), Duration::from_secs(60))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RateKey;
    use std::sync::Arc;

    fn limit(count: u32, period: Duration, max_keys: usize) -> RateLimit {
        RateLimit {
            name: Arc::from("t"),
            count,
            period,
            burst: count,
            key: RateKey::Address,
            ipv6_prefix: 64,
            max_keys,
            exempt_paths: vec!["/healthz".into()],
            scope: crate::config::Scope::Local,
        }
    }

    #[test]
    fn exact_under_sixteen_threads_with_a_frozen_clock() {
        let l = Arc::new(Limiter::new(limit(50, Duration::from_secs(1), 10)));
        let allowed = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (l, allowed) = (l.clone(), allowed.clone());
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        if l.check(Key::Global, 5).allowed {
                            allowed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(allowed.load(Ordering::Relaxed), 50);
    }

    #[test]
    fn memory_stays_bounded_for_100k_addresses() {
        let l = Limiter::new(limit(10, Duration::from_secs(60), 1000));
        for i in 0..100_000u32 {
            l.check(Key::V4(i), u64::from(i));
        }
        assert!(l.tracked() <= 1001, "tracked {}", l.tracked());
        // Once their buckets refill, a sweep empties the table.
        let tracked = l.tracked();
        assert_eq!(l.sweep(3_600_000_000_000), tracked);
        assert_eq!(l.tracked(), 0);
        // And a full table makes room by itself once entries are idle.
        for i in 0..1000u32 {
            l.check(Key::V4(i), 0);
        }
        let d = l.check(Key::V4(5_000_000), 3_600_000_000_000);
        assert!(d.allowed);
        assert_eq!(
            l.tracked(),
            1,
            "idle entries swept, the new client tracked on its own"
        );
    }

    #[test]
    fn exempt_paths_match_on_segments() {
        let l = Limiter::new(limit(1, Duration::from_secs(1), 10));
        assert!(l.is_exempt("/healthz"));
        assert!(!l.is_exempt("/healthzz"));
    }
}
