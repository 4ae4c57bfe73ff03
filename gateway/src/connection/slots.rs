//! Concurrent connections per client address, for `max_connections_per_client`: a
//! count per address (IPv6 grouped by /64, one household or server), taken when a
//! connection starts and given back when it ends, whatever ends it.

use std::net::IpAddr;
use std::sync::Arc;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

use crate::ratelimit::key::address_key;

type ClientKey = crate::ratelimit::key::Key;

#[derive(Debug, Default)]
pub struct ClientSlots {
    open: DashMap<ClientKey, u32>,
}

/// One connection's place in its client's count; dropping it gives the place back.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<ClientSlots>,
    key: ClientKey,
    over: bool,
}

impl Slot {
    /// Whether this connection is beyond the cap (it is counted anyway: it is open).
    pub fn over(&self) -> bool {
        self.over
    }
}

impl ClientSlots {
    pub fn take(self: &Arc<Self>, ip: IpAddr, max: u32) -> Slot {
        let key = address_key(ip, 64);
        let mut open = self.open.entry(key).or_insert(0);
        *open += 1;
        let over = *open > max;
        drop(open);
        Slot {
            slots: Arc::clone(self),
            key,
            over,
        }
    }

    /// Connections `ip` holds now.
    pub fn open(&self, ip: IpAddr) -> u32 {
        self.open.get(&address_key(ip, 64)).map_or(0, |n| *n)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Entry::Occupied(mut e) = self.slots.open.entry(self.key) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_address_and_gives_back_on_drop() {
        let slots = Arc::new(ClientSlots::default());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = slots.take(a, 2);
        let second = slots.take(a, 2);
        let third = slots.take(a, 2);
        assert!(!first.over() && !second.over() && third.over());
        assert!(
            !slots.take(b, 2).over(),
            "another address has its own count"
        );
        drop(third);
        drop(first);
        assert_eq!(slots.open(a), 1);
        assert!(!slots.take(a, 2).over());
        drop(second);
        assert_eq!(slots.open(a), 0);
        assert!(slots.open.is_empty(), "no entry left behind");
    }

    #[test]
    fn ipv6_counts_per_64() {
        let slots = Arc::new(ClientSlots::default());
        let _one = slots.take("2001:db8::1".parse().unwrap(), 1);
        assert!(slots.take("2001:db8::2".parse().unwrap(), 1).over());
        assert!(!slots.take("2001:db8:0:1::1".parse().unwrap(), 1).over());
    }
}
