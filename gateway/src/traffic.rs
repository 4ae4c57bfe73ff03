//! The last five minutes of traffic per route, kept by the gateway itself for the
//! status page: a fixed-size ring of 2-second slots (requests, 4xx, 5xx, rate-limit
//! refusals, a latency histogram), so an operator without Prometheus still sees rates
//! and percentiles. Memory is fixed per route; recording is a few relaxed atomics.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Seconds per slot: short enough that the chart moves, long enough that a slot of a
/// quiet route still holds a few requests for its percentiles.
pub const SLOT_SECS: u64 = 2;
/// 150 slots of 2 s: the last five minutes.
pub const SLOTS: usize = 150;
/// Latency buckets: four per octave of microseconds (about 19% wide), up to ~80 s.
const BUCKETS: usize = 104;

/// The process's time origin: slots are numbered from it, and shown in wall time.
static ORIGIN: LazyLock<(Instant, SystemTime)> =
    LazyLock::new(|| (Instant::now(), SystemTime::now()));

/// The slot number of `at` (0 for anything before the origin).
fn slot_of(at: Instant) -> u64 {
    at.saturating_duration_since(ORIGIN.0).as_secs() / SLOT_SECS
}

/// The wall time (Unix seconds) at which slot `n` began; negative `n` counts back from
/// the process's start (the chart's window before there was any traffic to keep).
pub fn slot_start(n: i64) -> i64 {
    let origin = ORIGIN
        .1
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    origin + n * SLOT_SECS as i64
}

/// The slot now being filled.
pub fn current_slot() -> u64 {
    slot_of(Instant::now())
}

/// Log-linear bucket of a latency: exact below 4 µs, then four per power of two.
fn bucket(micros: u64) -> usize {
    if micros < 4 {
        return micros as usize;
    }
    let msb = 63 - micros.leading_zeros() as usize;
    let sub = ((micros >> (msb - 2)) & 3) as usize;
    ((msb - 1) * 4 + sub).min(BUCKETS - 1)
}

/// The middle of bucket `i`, in microseconds.
fn bucket_mid(i: usize) -> f64 {
    if i < 4 {
        return i as f64;
    }
    let msb = i / 4 + 1;
    let low = ((4 + (i % 4)) as u64) << (msb - 2);
    low as f64 + (1u64 << (msb - 2)) as f64 / 2.0
}

/// How a request ended, for the counters.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    pub status: u16,
    pub rate_limited: bool,
    pub took: Duration,
}

struct Slot {
    /// The slot number this slot holds plus one (0: never used).
    epoch: AtomicU64,
    requests: AtomicU32,
    client_errors: AtomicU32,
    server_errors: AtomicU32,
    rate_limited: AtomicU32,
    latency: [AtomicU32; BUCKETS],
}

impl Slot {
    fn new() -> Slot {
        Slot {
            epoch: AtomicU64::new(0),
            requests: AtomicU32::new(0),
            client_errors: AtomicU32::new(0),
            server_errors: AtomicU32::new(0),
            rate_limited: AtomicU32::new(0),
            latency: std::array::from_fn(|_| AtomicU32::new(0)),
        }
    }

    fn clear(&self) {
        for c in [
            &self.requests,
            &self.client_errors,
            &self.server_errors,
            &self.rate_limited,
        ] {
            c.store(0, Ordering::Relaxed);
        }
        for c in &self.latency {
            c.store(0, Ordering::Relaxed);
        }
    }
}

/// What one slot of one route held, as read back.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SlotCounts {
    pub requests: u64,
    pub client_errors: u64,
    pub server_errors: u64,
    pub rate_limited: u64,
    latency: Vec<u64>,
}

impl SlotCounts {
    /// Adds another slot's (or route's) counts into this one.
    pub fn add(&mut self, o: &SlotCounts) {
        self.requests += o.requests;
        self.client_errors += o.client_errors;
        self.server_errors += o.server_errors;
        self.rate_limited += o.rate_limited;
        if self.latency.len() < o.latency.len() {
            self.latency.resize(o.latency.len(), 0);
        }
        for (a, b) in self.latency.iter_mut().zip(&o.latency) {
            *a += b;
        }
    }

    /// The latency at quantile `q` (0..1), in milliseconds; None without requests.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total: u64 = self.latency.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.latency.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(bucket_mid(i) / 1000.0);
            }
        }
        None
    }
}

/// One route's ring. Shared across reloads for a route that keeps its name.
pub struct RouteTraffic {
    slots: Box<[Slot]>,
}

impl Default for RouteTraffic {
    fn default() -> Self {
        RouteTraffic {
            slots: (0..SLOTS).map(|_| Slot::new()).collect(),
        }
    }
}

impl RouteTraffic {
    /// Counts one finished request in the slot of `now`.
    pub fn record(&self, now: Instant, o: Outcome) {
        let n = slot_of(now);
        let slot = &self.slots[(n % SLOTS as u64) as usize];
        let epoch = slot.epoch.load(Ordering::Acquire);
        if epoch != n + 1 {
            // The first request of a new slot claims it and clears what the slot held
            // five minutes ago. A request counted by another thread between the claim
            // and the clear can be lost: a display may be off by one, never the edge.
            if slot
                .epoch
                .compare_exchange(epoch, n + 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                slot.clear();
            }
        }
        slot.requests.fetch_add(1, Ordering::Relaxed);
        match o.status {
            400..=499 => slot.client_errors.fetch_add(1, Ordering::Relaxed),
            500..=599 => slot.server_errors.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
        if o.rate_limited {
            slot.rate_limited.fetch_add(1, Ordering::Relaxed);
        }
        let micros = u64::try_from(o.took.as_micros()).unwrap_or(u64::MAX);
        slot.latency[bucket(micros)].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts of slot `n` (empty when the ring no longer, or not yet, holds it).
    pub fn read(&self, n: u64) -> SlotCounts {
        let slot = &self.slots[(n % SLOTS as u64) as usize];
        if slot.epoch.load(Ordering::Acquire) != n + 1 {
            return SlotCounts::default();
        }
        SlotCounts {
            requests: slot.requests.load(Ordering::Relaxed).into(),
            client_errors: slot.client_errors.load(Ordering::Relaxed).into(),
            server_errors: slot.server_errors.load(Ordering::Relaxed).into(),
            rate_limited: slot.rate_limited.load(Ordering::Relaxed).into(),
            latency: slot
                .latency
                .iter()
                .map(|c| u64::from(c.load(Ordering::Relaxed)))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(status: u16, ms: u64) -> Outcome {
        Outcome {
            status,
            rate_limited: status == 429,
            took: Duration::from_millis(ms),
        }
    }

    #[test]
    fn buckets_are_monotonic_and_about_a_fifth_wide() {
        let mut last = 0;
        for us in 0..2_000_000u64 {
            let b = bucket(us);
            assert!(b >= last, "bucket({us}) went back");
            last = b;
            if us >= 100 {
                let mid = bucket_mid(b);
                assert!((mid - us as f64).abs() / (us as f64) < 0.2, "{us} -> {mid}");
            }
        }
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn a_slot_counts_classes_and_percentiles() {
        let t = RouteTraffic::default();
        let now = Instant::now();
        for _ in 0..98 {
            t.record(now, outcome(200, 10));
        }
        t.record(now, outcome(429, 1));
        t.record(now, outcome(502, 400));
        let c = t.read(slot_of(now));
        assert_eq!(c.requests, 100);
        assert_eq!(c.client_errors, 1);
        assert_eq!(c.rate_limited, 1);
        assert_eq!(c.server_errors, 1);
        let p50 = c.quantile_ms(0.5).unwrap();
        assert!((8.0..12.0).contains(&p50), "p50 {p50}");
        let p999 = c.quantile_ms(0.999).unwrap();
        assert!((330.0..470.0).contains(&p999), "p99.9 {p999}");
        assert_eq!(t.read(slot_of(now) + 1), SlotCounts::default());
    }

    #[test]
    fn a_slot_is_cleared_when_the_ring_comes_round() {
        let t = RouteTraffic::default();
        let now = ORIGIN.0 + Duration::from_secs(7);
        t.record(now, outcome(200, 1));
        let later = now + Duration::from_secs(SLOT_SECS * SLOTS as u64);
        t.record(later, outcome(200, 1));
        assert_eq!(t.read(slot_of(later)).requests, 1);
        assert_eq!(
            t.read(slot_of(now)),
            SlotCounts::default(),
            "the old slot is gone"
        );
    }
}
