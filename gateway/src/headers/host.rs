//! The host a request names (`Host`, or the URI's authority: HTTP/2's `:authority`),
//! and whether it names one acceptably.

use http::HeaderMap;

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

/// The host a request names, as sent (port included): the `Host` header, else the
/// URI's authority (HTTP/2's `:authority`, or an absolute-form target). For
/// `X-Forwarded-Host`, which must be there whichever protocol the client spoke.
pub fn authority(headers: &HeaderMap, uri: &http::Uri) -> Option<http::HeaderValue> {
    headers.get(http::header::HOST).cloned().or_else(|| {
        uri.authority()
            .and_then(|a| http::HeaderValue::from_str(a.as_str()).ok())
    })
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn authority_from_host_else_uri() {
        let mut h = HeaderMap::new();
        let uri: http::Uri = "https://h2.test:8443/x".parse().unwrap();
        assert_eq!(authority(&h, &uri).unwrap(), "h2.test:8443");
        h.insert(http::header::HOST, "h1.test:8080".parse().unwrap());
        assert_eq!(authority(&h, &uri).unwrap(), "h1.test:8080");
        assert!(authority(&HeaderMap::new(), &"/x".parse().unwrap()).is_none());
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
}
