//! Who a limit has been refusing lately, for the status page: per client address, how
//! many refusals and the last one, over the last five minutes. Bounded: at most
//! `MAX_CLIENTS` addresses, the one refused longest ago making room for a new one. Only
//! refusals pay for it (a lock and a small map), never an allowed request.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Enough to show who is hammering; a flood from many addresses keeps the latest.
const MAX_CLIENTS: usize = 256;
/// What "lately" means.
pub const WINDOW: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Refused {
    pub client: IpAddr,
    pub refusals: u64,
    pub last: Instant,
}

#[derive(Default)]
pub struct Refusals {
    by_client: Mutex<HashMap<IpAddr, (u64, Instant)>>,
}

impl Refusals {
    /// Counts one refusal of `client` at `now`.
    pub fn note(&self, client: IpAddr, now: Instant) {
        let mut map = self.by_client.lock().unwrap_or_else(|p| p.into_inner());
        if !map.contains_key(&client) && map.len() >= MAX_CLIENTS {
            map.retain(|_, (_, last)| now.saturating_duration_since(*last) < WINDOW);
            if map.len() >= MAX_CLIENTS {
                if let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, (_, last))| *last)
                    .map(|(ip, _)| *ip)
                {
                    map.remove(&oldest);
                }
            }
        }
        let e = map.entry(client).or_insert((0, now));
        e.0 += 1;
        e.1 = now;
    }

    /// The `n` clients refused most within the window, most first.
    pub fn top(&self, n: usize, now: Instant) -> Vec<Refused> {
        let mut map = self.by_client.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, (_, last)| now.saturating_duration_since(*last) < WINDOW);
        let mut out: Vec<Refused> = map
            .iter()
            .map(|(ip, (refusals, last))| Refused {
                client: *ip,
                refusals: *refusals,
                last: *last,
            })
            .collect();
        out.sort_by(|a, b| b.refusals.cmp(&a.refusals).then(b.last.cmp(&a.last)));
        out.truncate(n);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n))
    }

    #[test]
    fn the_most_refused_come_first_and_old_ones_go() {
        let r = Refusals::default();
        let t = Instant::now();
        for _ in 0..5 {
            r.note(ip(1), t);
        }
        r.note(ip(2), t);
        let top = r.top(10, t);
        assert_eq!(top.len(), 2);
        assert_eq!((top[0].client, top[0].refusals), (ip(1), 5));
        assert!(
            r.top(10, t + WINDOW).is_empty(),
            "forgotten after the window"
        );
    }

    #[test]
    fn memory_is_bounded_and_the_latest_are_kept() {
        let r = Refusals::default();
        let t = Instant::now();
        for n in 0..1000 {
            r.note(ip(n), t + Duration::from_millis(u64::from(n)));
        }
        let top = r.top(usize::MAX, t + Duration::from_secs(1));
        assert_eq!(top.len(), MAX_CLIENTS);
        assert!(
            top.iter().any(|x| x.client == ip(999)),
            "the newest is kept"
        );
        assert!(
            !top.iter().any(|x| x.client == ip(0)),
            "the oldest made room"
        );
    }
}
