//! Who the client is: the peer, or behind proxies the operator trusts the address
//! they report in `X-Forwarded-For`; and the `X-Forwarded-For` the replica is sent.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::net::canonical;

pub fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    let ip = canonical(ip);
    trusted.iter().any(|n| n.contains(&ip))
}

/// The client's address: the peer, unless the peer is a trusted proxy; then the
/// right-most `X-Forwarded-For` entry that is not itself a trusted proxy (as nginx's
/// `real_ip_recursive on`). An unparsable entry stops the walk.
pub fn client_ip(peer: IpAddr, xff: Option<&[u8]>, trusted: &[IpNet]) -> IpAddr {
    let peer = canonical(peer);
    if !is_trusted(peer, trusted) {
        return peer;
    }
    let Some(list) = xff.and_then(|v| std::str::from_utf8(v).ok()) else {
        return peer;
    };
    let mut client = peer;
    for entry in list.rsplit(',') {
        match parse_forwarded_ip(entry.trim()) {
            Some(ip) => {
                client = canonical(ip);
                if !is_trusted(client, trusted) {
                    break;
                }
            }
            None => break,
        }
    }
    client
}

/// `1.2.3.4`, `2001:db8::1`, `[2001:db8::1]:443` or `1.2.3.4:80`.
fn parse_forwarded_ip(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse() {
        return Some(ip);
    }
    if let Some(v6) = s.strip_prefix('[') {
        return v6.split(']').next()?.parse().ok();
    }
    s.rsplit_once(':')
        .and_then(|(h, _)| h.parse::<std::net::Ipv4Addr>().ok())
        .map(IpAddr::V4)
}

/// The `X-Forwarded-For` value to send upstream: the trusted chain plus the peer, or
/// just the peer when the peer is not trusted (a client cannot forge its history).
pub fn forwarded_for(peer: IpAddr, xff: Option<&[u8]>, trusted: &[IpNet]) -> Vec<u8> {
    let peer = canonical(peer);
    let mut out = Vec::with_capacity(16);
    match xff.and_then(|v| std::str::from_utf8(v).ok()) {
        Some(prev) if is_trusted(peer, trusted) && !prev.trim().is_empty() => {
            out.extend_from_slice(prev.trim().as_bytes());
            out.extend_from_slice(b", ");
        }
        _ => {}
    }
    ip_text(&mut out, peer);
    out
}

/// An address as `Display` writes it. IPv4 (nearly every peer) is written digit by
/// digit: the `Display` machinery cost ~1,300 instructions per request here.
pub fn ip_text(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                out.extend_from_slice(itoa::Buffer::new().format(octet).as_bytes());
            }
        }
        IpAddr::V6(v6) => {
            use std::io::Write;
            let _ = write!(out, "{v6}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn untrusted_peer_cannot_claim_an_address() {
        let t = nets(&["10.0.0.0/8"]);
        let peer: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(client_ip(peer, Some(b"1.1.1.1"), &t), peer);
        assert_eq!(forwarded_for(peer, Some(b"1.1.1.1"), &t), b"203.0.113.9");
    }

    #[test]
    fn trusted_chain_is_walked_from_the_right() {
        let t = nets(&["10.0.0.0/8", "192.168.0.0/16"]);
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(
            client_ip(peer, Some(b"6.6.6.6, 198.51.100.7, 192.168.1.1"), &t).to_string(),
            "198.51.100.7"
        );
        assert_eq!(client_ip(peer, None, &t), peer);
        assert_eq!(client_ip(peer, Some(b"garbage"), &t), peer);
        assert_eq!(
            client_ip(peer, Some(b"[2001:db8::7]:443"), &t).to_string(),
            "2001:db8::7"
        );
        assert_eq!(
            forwarded_for(peer, Some(b"198.51.100.7"), &t),
            b"198.51.100.7, 10.0.0.2"
        );
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "1.2.3.4",
            "10.0.100.9",
            "255.255.255.255",
            "2001:db8::1",
        ] {
            let mut out = Vec::new();
            ip_text(&mut out, ip.parse().unwrap());
            assert_eq!(out, ip.as_bytes());
        }
    }

    #[test]
    fn mapped_v6_peers_are_v4() {
        let t = nets(&["127.0.0.0/8"]);
        let peer: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert!(is_trusted(peer, &t));
        assert_eq!(forwarded_for(peer, None, &t), b"127.0.0.1");
    }
}
