//! Header work on the request path, as pure functions: who the client is (trusted
//! `X-Forwarded-For`), what the replica is told (`X-Forwarded-*`), and hop-by-hop
//! stripping in both directions.

use std::net::IpAddr;

use http::header::{
    HeaderMap, HeaderName, HeaderValue, CONNECTION, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION,
    TRAILER,
};
use ipnet::IpNet;
use pingora_core::{ErrorType, OrErr};
use pingora_http::{RequestHeader, ResponseHeader};

// Names as `HeaderName` constants for lookups: given as `&str`, every lookup would
// parse the name again (callgrind showed name parsing at ~4% of a request's
// instructions).
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

pub const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
pub const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
pub const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// Runs `edit` on a request head's header map, and leaves the head without pingora's
/// header-case map. Pingora keeps every HTTP/1 header's original spelling in a second
/// map: each insert through it parses the name again and writes both maps, and each
/// header written to the wire is looked up there once more (callgrind: about a tenth
/// of a proxied request's instructions). Without it pingora writes a dozen common
/// names title-cased (`Content-Type`, `Host`, `Set-Cookie`...) and the rest in
/// lowercase, as HTTP/2 always does and HAProxy does for HTTP/1; header names are
/// case-insensitive (RFC 9110 section 5.1).
///
/// The head's parts move out and back in, nothing is copied. A request-target the URI
/// does not reproduce (absolute-form, non-UTF-8) is put back as it was received.
pub fn edit_request<R>(head: &mut RequestHeader, edit: impl FnOnce(&mut HeaderMap) -> R) -> R {
    let verbatim = (head.uri.path_and_query().map(|p| p.as_str().as_bytes())
        != Some(head.raw_path()))
    .then(|| head.raw_path().to_vec());
    let empty = RequestHeader::from(http::Request::new(()).into_parts().0);
    let mut parts = http::request::Parts::from(std::mem::replace(head, empty));
    let out = edit(&mut parts.headers);
    *head = RequestHeader::from(parts);
    if let Some(target) = verbatim {
        // It was parsed from these very bytes once; should it fail now, the URI stands.
        let _ = head.set_raw_path(&target);
    }
    out
}

/// As [`edit_request`], for a response head; a reason phrase other than the status's
/// usual one is kept.
pub fn edit_response<R>(head: &mut ResponseHeader, edit: impl FnOnce(&mut HeaderMap) -> R) -> R {
    let reason = head
        .get_reason_phrase()
        .filter(|r| Some(*r) != head.status.canonical_reason())
        .map(str::to_owned);
    let empty = ResponseHeader::from(http::Response::new(()).into_parts().0);
    let mut parts = http::response::Parts::from(std::mem::replace(head, empty));
    let out = edit(&mut parts.headers);
    *head = ResponseHeader::from(parts);
    if reason.is_some() {
        // Only fails for a phrase pingora accepted when it read the response.
        let _ = head.set_reason_phrase(reason.as_deref());
    }
    out
}

/// A header value, or the error pingora's own `insert_header` gives for an invalid one.
pub fn header_value<V: TryInto<HeaderValue>>(v: V) -> pingora_core::Result<HeaderValue> {
    v.try_into()
        .explain_err(ErrorType::InvalidHTTPHeader, |_| "invalid header value")
}

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

/// Whether a request names its host acceptably (RFC 9112 section 3.2): HTTP/1.1 needs
/// one (in `Host` or an absolute URI); when present it must be `name[:port]`, an IPv4
/// address, or `[IPv6][:port]`.
pub fn host_acceptable(headers: &HeaderMap, uri: &http::Uri, version: http::Version) -> bool {
    let raw = match headers.get(http::header::HOST) {
        Some(v) => match v.to_str() {
            Ok(s) => s,
            Err(_) => return false,
        },
        None => return uri.authority().is_some() || version < http::Version::HTTP_11,
    };
    let (host, port) = match raw.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((v6, after)) if v6.parse::<std::net::Ipv6Addr>().is_ok() => {
                ("v6", after.strip_prefix(':'))
            }
            _ => return false,
        },
        None => match raw.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (raw, None),
        },
    };
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    let host_ok = host == "v6"
        || (!host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_'));
    port_ok && host_ok
}

/// `s` in ASCII lowercase, allocating only when it has an uppercase letter (hosts and
/// origins almost never do).
pub fn ascii_lowercase(s: &str) -> std::borrow::Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(s.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(s)
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
const HOP_BY_HOP: [HeaderName; 5] = [
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
    TRAILER,
];

/// Names listed in `Connection` (other than `close`/`keep-alive`/`upgrade`); almost
/// always none, so nothing is allocated in the common case.
fn connection_listed(headers: &HeaderMap) -> Vec<HeaderName> {
    let mut out = Vec::new();
    for v in headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
    {
        for t in v.split(',').map(str::trim) {
            let plain = t.is_empty()
                || t.eq_ignore_ascii_case("close")
                || t.eq_ignore_ascii_case("keep-alive")
                || t.eq_ignore_ascii_case("upgrade");
            if !plain {
                if let Ok(n) = HeaderName::from_bytes(t.to_ascii_lowercase().as_bytes()) {
                    out.push(n);
                }
            }
        }
    }
    out
}

/// Drops hop-by-hop headers from a response (pingora rewrites `Connection` itself).
/// A request needs no such step here: pingora's upstream request policy (the
/// default, `HttpUpstreamRequestPolicy::standard`) strips the same names, those the
/// client's `Connection` lists and any `Upgrade` but WebSocket's, before
/// `upstream_request_filter` runs.
pub fn strip_response_hop_by_hop(h: &mut HeaderMap) {
    for name in connection_listed(h) {
        h.remove(&name);
    }
    for name in &HOP_BY_HOP {
        h.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn edited_heads_keep_everything_but_the_case_map() {
        let mut req = RequestHeader::build("GET", b"/a/b?c=1", None).unwrap();
        req.insert_header("X-Kept", "1").unwrap();
        edit_request(&mut req, |h| {
            h.insert(X_REQUEST_ID, HeaderValue::from_static("r"))
        });
        assert!(!req.has_case());
        assert_eq!(req.raw_path(), b"/a/b?c=1");
        assert_eq!(req.headers["x-kept"], "1");
        assert_eq!(req.headers["x-request-id"], "r");

        // A target the URI does not reproduce is put back byte for byte.
        for target in [&b"http://h.test/p?q"[..], b"/caf\xe9"] {
            let mut req = RequestHeader::build("GET", target, None).unwrap();
            edit_request(&mut req, |_| ());
            assert_eq!(req.raw_path(), target);
        }

        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.set_reason_phrase(Some("Fine")).unwrap();
        resp.insert_header("Set-Cookie", "a=1").unwrap();
        edit_response(&mut resp, |h| {
            h.insert(X_REQUEST_ID, HeaderValue::from_static("r"))
        });
        assert!(!resp.has_case());
        assert_eq!(resp.get_reason_phrase(), Some("Fine"));
        assert_eq!(resp.headers["set-cookie"], "a=1");
        assert_eq!(resp.headers["x-request-id"], "r");
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

    #[test]
    fn host_acceptable_per_rfc_9112() {
        let uri: http::Uri = "/x".parse().unwrap();
        let with = |h: &str| {
            let mut m = HeaderMap::new();
            m.insert("host", h.parse().unwrap());
            host_acceptable(&m, &uri, http::Version::HTTP_11)
        };
        assert!(
            with("example.com")
                && with("example.com:8443")
                && with("127.0.0.1")
                && with("[::1]:80")
        );
        assert!(
            !with("a b") && !with("x:") && !with("x:99999999") && !with("[nope]") && !with("a/b")
        );
        assert!(
            !host_acceptable(&HeaderMap::new(), &uri, http::Version::HTTP_11),
            "HTTP/1.1 needs a host"
        );
        assert!(
            host_acceptable(&HeaderMap::new(), &uri, http::Version::HTTP_10),
            "HTTP/1.0 may omit it"
        );
        let absolute: http::Uri = "http://example.com/x".parse().unwrap();
        assert!(host_acceptable(
            &HeaderMap::new(),
            &absolute,
            http::Version::HTTP_11
        ));
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
    fn hop_by_hop_stripping() {
        let mut resp = HeaderMap::new();
        resp.insert("connection", "close, X-Secret".parse().unwrap());
        resp.insert("x-secret", "1".parse().unwrap());
        resp.insert("keep-alive", "timeout=5".parse().unwrap());
        resp.insert("trailer", "x-checksum".parse().unwrap());
        resp.insert("x-kept", "1".parse().unwrap());
        strip_response_hop_by_hop(&mut resp);
        for gone in ["x-secret", "keep-alive", "trailer"] {
            assert!(resp.get(gone).is_none(), "{gone}");
        }
        assert!(resp.get("x-kept").is_some());
    }
}
