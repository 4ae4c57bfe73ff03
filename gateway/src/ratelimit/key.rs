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

/// The key for one request as text every gateway derives alike, for limits counted in
/// the shared store (`None`: no limit applies). A header's value is hashed with SHA-256
/// (no secret, the same everywhere): the store never holds the value itself.
pub fn shared_key(
    kind: &RateKey,
    ipv6_prefix: u8,
    client: Option<IpAddr>,
    headers: &HeaderMap,
) -> Option<String> {
    let address = |ip: IpAddr| match address_key(ip, ipv6_prefix) {
        Key::V4(v) => format!("a{v:08x}"),
        Key::V6(v) => format!("b{v:032x}"),
        _ => "g".to_owned(),
    };
    match kind {
        RateKey::Global => Some("g".to_owned()),
        RateKey::Address => client.map(address),
        RateKey::Header(name) => match headers.get(name).filter(|v| !v.is_empty()) {
            Some(v) => {
                let digest = ring::digest::digest(&ring::digest::SHA256, v.as_bytes());
                let hex: String = digest.as_ref()[..16]
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                Some(format!("h{hex}"))
            }
            None => client.map(address),
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
    fn shared_keys_are_the_same_text_everywhere_and_never_the_header_value() {
        let kind = RateKey::Header(http::HeaderName::from_static("authorization"));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let mut h = HeaderMap::new();
        assert_eq!(
            shared_key(&kind, 64, Some(ip), &h).as_deref(),
            Some("ac0000201")
        );
        h.insert("authorization", "Bearer alice".parse().unwrap());
        let alice = shared_key(&kind, 64, Some(ip), &h).unwrap();
        assert_eq!(alice, shared_key(&kind, 64, None, &h).unwrap(), "stable");
        assert!(alice.starts_with('h') && alice.len() == 33, "{alice}");
        assert!(!alice.contains("alice"));
        let v6: IpAddr = "2001:db8:1:2::9".parse().unwrap();
        assert_eq!(
            shared_key(&RateKey::Address, 64, Some(v6), &h).as_deref(),
            Some("b20010db8000100020000000000000000")
        );
        assert_eq!(
            shared_key(&RateKey::Global, 64, None, &h).as_deref(),
            Some("g")
        );
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
