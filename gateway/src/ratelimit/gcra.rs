//! GCRA (the generic cell rate algorithm, as in the `governor` crate and ATM networks):
//! the whole state of one client is one number, its theoretical arrival time (TAT).
//! Pure arithmetic on nanoseconds, so tests drive it with any clock.
//!
//! With `T = period / count` and `burst = B`: a fresh client may send B requests at
//! once, then one per T. Over any span D from a full bucket, at most `B + floor(D / T)`
//! requests pass, exactly.

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Requests that would still pass right now.
    pub remaining: u32,
    /// Nanoseconds until the bucket is full again.
    pub reset_ns: u64,
    /// Nanoseconds until the next request may pass (0 when allowed).
    pub retry_after_ns: u64,
}

/// Rate parameters in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// Emission interval T: the time one request "costs".
    pub t: u64,
    pub burst: u32,
}

impl Gcra {
    pub fn new(count: u32, period: std::time::Duration, burst: u32) -> Self {
        let t = (period.as_nanos() / u128::from(count.max(1))).clamp(1, u128::from(u64::MAX / 2))
            as u64;
        Gcra {
            t,
            burst: burst.max(1),
        }
    }

    fn capacity(&self) -> u64 {
        self.t.saturating_mul(u64::from(self.burst))
    }

    /// Checks one request at `now` against stored `tat` (None: never seen or expired);
    /// returns the decision and the TAT to store (unchanged when denied).
    pub fn check(&self, tat: Option<u64>, now: u64) -> (Decision, Option<u64>) {
        let tat = tat.map_or(now, |t| t.max(now));
        let new_tat = tat.saturating_add(self.t);
        let allow_at = new_tat.saturating_sub(self.capacity());
        if now < allow_at {
            let d = Decision {
                allowed: false,
                remaining: 0,
                reset_ns: tat - now,
                retry_after_ns: allow_at - now,
            };
            return (d, None);
        }
        let used = new_tat - now;
        let remaining = ((self.capacity() - used.min(self.capacity())) / self.t) as u32;
        (
            Decision {
                allowed: true,
                remaining,
                reset_ns: used,
                retry_after_ns: 0,
            },
            Some(new_tat),
        )
    }

    /// A stored TAT at or before `now` means a full bucket: the entry can be dropped.
    pub fn is_idle(tat: u64, now: u64) -> bool {
        tat <= now
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MIN: u64 = 60_000_000_000;

    fn run(g: &Gcra, times: &[u64]) -> usize {
        let mut tat = None;
        let mut allowed = 0;
        for &now in times {
            let (d, new) = g.check(tat, now);
            if d.allowed {
                allowed += 1;
                tat = new;
            }
        }
        allowed
    }

    #[test]
    fn five_per_fifteen_minutes_exactly() {
        let g = Gcra::new(5, Duration::from_secs(900), 5);
        // 20 attempts at t=0: the burst of 5 passes.
        assert_eq!(run(&g, &[0; 20]), 5);
        // One attempt per minute for 15 minutes: 5 at once, then one every 3 minutes.
        let per_minute: Vec<u64> = (0..15).map(|m| m * MIN).collect();
        assert_eq!(run(&g, &per_minute), 5 + 4); // minutes 0..4, then 6, 9, 12 ... (B + floor(14/3))
                                                 // The 6th at t=0 must wait exactly one emission interval (3 minutes).
        let mut tat = None;
        for _ in 0..5 {
            tat = g.check(tat, 0).1;
        }
        let (d, _) = g.check(tat, 0);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_ns, 3 * MIN);
        assert_eq!(d.reset_ns, 15 * MIN);
        let (d, _) = g.check(tat, 3 * MIN);
        assert!(d.allowed);
    }

    #[test]
    fn remaining_counts_down_and_refills() {
        let g = Gcra::new(100, Duration::from_secs(60), 100);
        let (d, tat) = g.check(None, 0);
        assert_eq!((d.allowed, d.remaining), (true, 99));
        let (d, _) = g.check(tat, 0);
        assert_eq!(d.remaining, 98);
        // After 60 s everything is back.
        let (d, _) = g.check(tat, 60 * 1_000_000_000);
        assert_eq!(d.remaining, 99);
        assert!(Gcra::is_idle(tat.unwrap(), 600_000_000));
    }

    #[test]
    fn burst_smaller_than_count() {
        let g = Gcra::new(10, Duration::from_secs(1), 2);
        assert_eq!(run(&g, &[0; 10]), 2);
        // 100 ms later one more (T = 100 ms).
        assert_eq!(run(&g, &[0, 0, 0, 100_000_000, 100_000_000]), 3);
    }
}
