//! Client addresses as the gateway compares them: an IPv4 client reaching an IPv6
//! socket arrives as `::ffff:a.b.c.d`, and every allow list, trusted-proxy list, rate
//! limit and connection count must see the IPv4 address it really is.

use std::net::IpAddr;

/// `ip`, with an IPv4-mapped IPv6 address (`::ffff:10.0.0.1`) as the IPv4 address.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_v6_is_v4_and_the_rest_is_unchanged() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(canonical(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
        assert_eq!(canonical(ip("2001:db8::1")), ip("2001:db8::1"));
        assert_eq!(canonical(ip("192.0.2.7")), ip("192.0.2.7"));
    }
}
