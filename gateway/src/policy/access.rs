//! Request admission checks that need no upstream: address allow/deny lists, header
//! and body size limits, and ambiguous framing.

use std::net::IpAddr;

use ipnet::IpNet;
use pingora_http::RequestHeader;

/// Deny wins; a non-empty allow list admits only what it lists.
pub fn address_allowed(ip: Option<IpAddr>, allow: &[IpNet], deny: &[IpNet]) -> bool {
    if allow.is_empty() && deny.is_empty() {
        return true;
    }
    let Some(ip) = ip else { return false };
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    if deny.iter().any(|n| n.contains(&ip)) {
        return false;
    }
    allow.is_empty() || allow.iter().any(|n| n.contains(&ip))
}

/// Approximate size of the request head as sent: request line plus header lines.
pub fn header_size(req: &RequestHeader) -> u64 {
    // Measured without formatting the URI (no allocation on the request path).
    let target = req.uri.path_and_query().map_or(1, |pq| pq.as_str().len())
        + req.uri.authority().map_or(0, |a| a.as_str().len() + 8);
    let line = req.method.as_str().len() + target + 12;
    let headers: usize = req
        .headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    (line + headers) as u64
}

/// The declared body length, if any.
pub fn content_length(req: &RequestHeader) -> Option<u64> {
    req.headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// True when an HTTP/1.1 request arrived with both `Transfer-Encoding` and
/// `Content-Length`. Pingora resolves that per RFC 9112 (chunked wins, the length is
/// dropped, keep-alive is turned off) before our filters run, so the only trace left is
/// a chunked request whose keep-alive was disabled although the client asked for none
/// of that and the server is not shutting down.
pub fn had_length_and_chunked(
    req: &RequestHeader,
    keepalive_off: bool,
    shutting_down: bool,
) -> bool {
    let chunked = req.headers.contains_key(http::header::TRANSFER_ENCODING);
    let asked_close = req
        .headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")));
    req.version == http::Version::HTTP_11
        && chunked
        && keepalive_off
        && !asked_close
        && !shutting_down
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn allow_and_deny() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert!(address_allowed(ip("1.2.3.4"), &[], &[]));
        assert!(address_allowed(ip("10.1.1.1"), &nets(&["10.0.0.0/8"]), &[]));
        assert!(!address_allowed(
            ip("11.1.1.1"),
            &nets(&["10.0.0.0/8"]),
            &[]
        ));
        assert!(!address_allowed(
            ip("10.6.6.6"),
            &nets(&["10.0.0.0/8"]),
            &nets(&["10.6.0.0/16"])
        ));
        assert!(!address_allowed(ip("6.6.6.6"), &[], &nets(&["6.6.6.6/32"])));
        assert!(address_allowed(
            ip("::ffff:10.0.0.1"),
            &nets(&["10.0.0.0/8"]),
            &[]
        ));
        assert!(!address_allowed(None, &nets(&["10.0.0.0/8"]), &[]));
    }

    #[test]
    fn length_and_chunked_trace() {
        let mut req = RequestHeader::build("POST", b"/x", None).unwrap();
        req.insert_header("transfer-encoding", "chunked").unwrap();
        assert!(had_length_and_chunked(&req, true, false));
        assert!(!had_length_and_chunked(&req, false, false));
        assert!(!had_length_and_chunked(&req, true, true));
        req.insert_header("connection", "close").unwrap();
        assert!(!had_length_and_chunked(&req, true, false));
    }
}
