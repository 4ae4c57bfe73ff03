//! Header work on the request path, as pure functions: who the client is (trusted
//! `X-Forwarded-For`), what the replica is told (`X-Forwarded-*`), and hop-by-hop
//! stripping in both directions.

use std::net::IpAddr;

use http::header::{HeaderMap, HeaderName, CONNECTION, TE, UPGRADE};
use ipnet::IpNet;

pub const X_REQUEST_ID: &str = "x-request-id";
pub const X_FORWARDED_FOR: &str = "x-forwarded-for";
pub const X_FORWARDED_PROTO: &str = "x-forwarded-proto";
pub const X_FORWARDED_HOST: &str = "x-forwarded-host";

pub fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    let ip = canonical(ip);
    trusted.iter().any(|n| n.contains(&ip))
}

/// IPv4-mapped IPv6 peers (`::ffff:10.0.0.1`) compare as the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
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
pub fn forwarded_for(peer: IpAddr, xff: Option<&[u8]>, trusted: &[IpNet]) -> String {
    let peer = canonical(peer);
    match xff.and_then(|v| std::str::from_utf8(v).ok()) {
        Some(prev) if is_trusted(peer, trusted) && !prev.trim().is_empty() => {
            format!("{}, {peer}", prev.trim())
        }
        _ => peer.to_string(),
    }
}

/// The Host a request was sent to, without port, from `Host` or the URI authority (h2).
pub fn request_host<'a>(headers: &'a HeaderMap, uri: &'a http::Uri) -> &'a str {
    let raw = headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .unwrap_or("");
    strip_port(raw)
}

fn strip_port(h: &str) -> &str {
    if h.starts_with('[') {
        return h.split_once(']').map_or(h, |(v6, _)| &h[..v6.len() + 1]);
    }
    h.rsplit_once(':').map_or(h, |(host, port)| {
        if port.bytes().all(|b| b.is_ascii_digit()) {
            host
        } else {
            h
        }
    })
}

/// Headers that describe one connection, not the message (RFC 9110 section 7.6.1).
const HOP_BY_HOP: [&str; 5] = [
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "trailer",
];

/// Names listed in `Connection` (other than `close`/`keep-alive`/`upgrade`).
fn connection_listed(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty() && t != "close" && t != "keep-alive" && t != "upgrade")
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect()
}

/// Which hop-by-hop headers to drop from a request before it goes upstream. Framing
/// (`Transfer-Encoding`, `Content-Length`) is left to pingora; `Upgrade` and
/// `Connection` survive only on upgrade requests (WebSocket).
pub fn request_hop_by_hop(headers: &HeaderMap, upgrade: bool) -> Vec<HeaderName> {
    let mut drop = connection_listed(headers);
    drop.extend(HOP_BY_HOP.iter().map(|h| HeaderName::from_static(h)));
    if !upgrade {
        drop.push(CONNECTION);
        drop.push(UPGRADE);
    }
    if headers.get(TE).is_some_and(|v| v.as_bytes() != b"trailers") {
        drop.push(TE);
    }
    drop
}

/// Which hop-by-hop headers to drop from a response (pingora rewrites `Connection`).
pub fn response_hop_by_hop(headers: &HeaderMap) -> Vec<HeaderName> {
    let mut drop = connection_listed(headers);
    drop.extend(HOP_BY_HOP.iter().map(|h| HeaderName::from_static(h)));
    drop
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
        assert_eq!(forwarded_for(peer, Some(b"1.1.1.1"), &t), "203.0.113.9");
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
            "198.51.100.7, 10.0.0.2"
        );
    }

    #[test]
    fn mapped_v6_peers_are_v4() {
        let t = nets(&["127.0.0.0/8"]);
        let peer: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert!(is_trusted(peer, &t));
        assert_eq!(forwarded_for(peer, None, &t), "127.0.0.1");
    }

    #[test]
    fn host_without_port() {
        let mut h = HeaderMap::new();
        let uri: http::Uri = "/x".parse().unwrap();
        h.insert("host", "Example.com:8080".parse().unwrap());
        assert_eq!(request_host(&h, &uri), "Example.com");
        h.insert("host", "[::1]:8080".parse().unwrap());
        assert_eq!(request_host(&h, &uri), "[::1]");
        let uri: http::Uri = "https://h2.example/x".parse().unwrap();
        assert_eq!(request_host(&HeaderMap::new(), &uri), "h2.example");
    }

    #[test]
    fn hop_by_hop_lists() {
        let mut h = HeaderMap::new();
        h.insert("connection", "close, X-Secret".parse().unwrap());
        h.insert("te", "gzip".parse().unwrap());
        let d = request_hop_by_hop(&h, false);
        assert!(d.contains(&HeaderName::from_static("x-secret")));
        assert!(d.contains(&CONNECTION) && d.contains(&UPGRADE) && d.contains(&TE));
        let d = request_hop_by_hop(&h, true);
        assert!(!d.contains(&CONNECTION) && !d.contains(&UPGRADE));
    }
}
