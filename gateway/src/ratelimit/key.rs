//! What a rate limit counts by: a compact, allocation-free key.

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::OnceLock;

use http::HeaderMap;

use crate::config::RateKey;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Key {
    V4(u32),
    /// The address masked to the configured prefix.
    V6(u128),
    /// A keyed hash of a header value: the value itself is never stored or logged.
    Hashed(u64),
    Global,
    /// Shared by new clients while the table is full (see `Limiter`).
    Overflow,
}

fn hasher() -> &'static std::collections::hash_map::RandomState {
    static STATE: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    STATE.get_or_init(Default::default)
}

pub fn address_key(ip: IpAddr, ipv6_prefix: u8) -> Key {
    match crate::net::canonical(ip) {
        IpAddr::V4(v4) => Key::V4(u32::from(v4)),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let shift = 128 - u32::from(ipv6_prefix.clamp(1, 128));
            let mask = if shift >= 128 { 0 } else { u128::MAX << shift };
            Key::V6(bits & mask)
        }
    }
}

/// The key for one request; `None` when the client address is unknown (no limit applies).
pub fn key_for(
    kind: &RateKey,
    ipv6_prefix: u8,
    client: Option<IpAddr>,
    headers: &HeaderMap,
) -> Option<Key> {
    match kind {
        RateKey::Global => Some(Key::Global),
        RateKey::Address => client.map(|ip| address_key(ip, ipv6_prefix)),
        RateKey::Header(name) => match headers.get(name).filter(|v| !v.is_empty()) {
            Some(v) => Some(Key::Hashed(hasher().hash_one(v.as_bytes()))),
            None => client.map(|ip| address_key(ip, ipv6_prefix)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_is_grouped_by_prefix() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a, 64), address_key(b, 64));
        assert_ne!(address_key(a, 64), address_key(c, 64));
        assert_ne!(address_key(a, 128), address_key(b, 128));
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(address_key(mapped, 64), Key::V4(0x0a010203));
    }

    #[test]
    fn header_keys_hash_and_fall_back_to_address() {
        let kind = RateKey::Header(http::HeaderName::from_static("authorization"));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let mut h = HeaderMap::new();
        assert_eq!(key_for(&kind, 64, Some(ip), &h), Some(Key::V4(0xc0000201)));
        h.insert("authorization", "Bearer alice".parse().unwrap());
        let alice = key_for(&kind, 64, Some(ip), &h);
        h.insert("authorization", "Bearer bob".parse().unwrap());
        let bob = key_for(&kind, 64, Some(ip), &h);
        assert!(matches!(alice, Some(Key::Hashed(_))));
        assert_ne!(alice, bob);
    }
}
