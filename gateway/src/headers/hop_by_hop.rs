//! Dropping the headers that describe one connection, not the message (RFC 9110
//! section 7.6.1), from the request sent upstream and from the response sent back, each
//! in one pass over the header map.
//!
//! The request side does what pingora's standard upstream request policy
//! (`HttpUpstreamRequestPolicy::standard`) does, with the same refusals, and the
//! gateway's peers switch that policy off (`upstream/pool.rs`). The policy removes
//! thirteen names one by one, most given as `&str` and so parsed again on every
//! request: callgrind counted 2.9k instructions per request there, a quarter of all the
//! gateway adds to a bare Pingora proxy. Here every header name is looked at once;
//! nothing is hashed unless something is there to remove.

use http::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, UPGRADE};

use super::edit::remove_where;

/// Pingora's bound on `Connection` tokens (after Envoy's): more is refused.
const MAX_NOMINATIONS: usize = 10;

/// Why a request's `Connection` header is refused (the client gets a 400).
#[derive(Debug, PartialEq, Eq)]
pub enum Nomination {
    TooMany,
    /// It names a header the gateway sets (`Host`, `X-Forwarded-*`) or a pseudo-header:
    /// honouring it would let a client strip what the replica relies on.
    Protected,
    /// A token that is not an HTTP `token` (RFC 9110 section 5.6.2), e.g. quoted.
    Malformed,
}

impl Nomination {
    pub fn message(&self) -> &'static str {
        match self {
            Nomination::TooMany => "too many Connection header nominations",
            Nomination::Protected => {
                "protected header cannot be nominated by the Connection header"
            }
            Nomination::Malformed => "invalid token nominated by the Connection header",
        }
    }
}

/// The standard hop-by-hop names of a request (pingora's list): whatever `Connection`
/// says, these never go upstream as the client sent them.
fn request_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "http2-settings"
    )
}

/// The response's: `Connection` and `Transfer-Encoding` are pingora's to write for the
/// client's connection, so they stay for it to replace.
fn response_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "trailer"
    )
}

/// RFC 9110 section 5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The names a request's `Connection` header nominates, refused as pingora refuses them.
fn nominations(h: &HeaderMap) -> Result<Vec<HeaderName>, Nomination> {
    let mut out = Vec::new();
    let tokens = h
        .get_all(CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty());
    for (n, token) in tokens.enumerate() {
        if n + 1 >= MAX_NOMINATIONS {
            return Err(Nomination::TooMany);
        }
        if token.starts_with(b":") {
            return Err(Nomination::Protected);
        }
        if !token.iter().all(|b| is_tchar(*b)) {
            return Err(Nomination::Malformed);
        }
        let name = HeaderName::from_bytes(token).map_err(|_| Nomination::Malformed)?;
        if matches!(
            name.as_str(),
            "host" | "x-forwarded-for" | "x-forwarded-host" | "x-forwarded-proto"
        ) {
            return Err(Nomination::Protected);
        }
        out.push(name);
    }
    Ok(out)
}

/// Drops from a request going upstream the standard hop-by-hop headers and those its
/// `Connection` names, and keeps a WebSocket handshake (HTTP/1.1 only) as exactly
/// `Connection: Upgrade` + `Upgrade: websocket`; any other upgrade is not forwarded.
pub fn strip_request(h: &mut HeaderMap, downstream_http11: bool) -> Result<(), Nomination> {
    let mut has_connection = false;
    let mut found = false;
    for name in h.keys() {
        if request_hop_by_hop(name) {
            found = true;
            has_connection |= name == CONNECTION;
        }
    }
    if !found {
        return Ok(());
    }
    let nominated = if has_connection {
        nominations(h)?
    } else {
        Vec::new()
    };
    let websocket = downstream_http11
        && h.get(UPGRADE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    remove_where(h, |n| request_hop_by_hop(n) || nominated.contains(n));
    if websocket {
        h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    }
    Ok(())
}

/// Names a response's `Connection` lists other than `close`, `keep-alive` and
/// `upgrade` (which name no header to drop). Almost every response lists none of those,
/// so nothing is allocated then.
fn connection_listed(h: &HeaderMap) -> Vec<HeaderName> {
    let mut out = Vec::new();
    for value in h.get_all(CONNECTION) {
        for token in value
            .as_bytes()
            .split(|b| *b == b',')
            .map(<[u8]>::trim_ascii)
        {
            let plain = token.is_empty()
                || token.eq_ignore_ascii_case(b"close")
                || token.eq_ignore_ascii_case(b"keep-alive")
                || token.eq_ignore_ascii_case(b"upgrade");
            if !plain {
                if let Ok(name) = HeaderName::from_bytes(token) {
                    out.push(name);
                }
            }
        }
    }
    out
}

/// Drops hop-by-hop headers from a response (pingora rewrites `Connection` itself).
pub fn strip_response(h: &mut HeaderMap) {
    let mut listed = Vec::new();
    let mut found = false;
    for name in h.keys() {
        if name == CONNECTION {
            listed = connection_listed(h);
        }
        found |= response_hop_by_hop(name);
    }
    if found || !listed.is_empty() {
        remove_where(h, |n| response_hop_by_hop(n) || listed.contains(n));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn names(h: &HeaderMap) -> Vec<&str> {
        let mut v: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn request_loses_hop_by_hop_and_nominated_headers() {
        let mut h = map(&[
            ("host", "a"),
            ("connection", "close, X-Secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("http2-settings", "AAA"),
            ("proxy-authorization", "Basic x"),
            ("x-kept", "yes"),
        ]);
        strip_request(&mut h, true).unwrap();
        assert_eq!(names(&h), ["host", "x-kept"]);

        // Nothing hop-by-hop: untouched.
        let mut h = map(&[("host", "a"), ("accept", "*/*")]);
        strip_request(&mut h, true).unwrap();
        assert_eq!(names(&h), ["accept", "host"]);
    }

    #[test]
    fn websocket_handshake_is_kept_in_canonical_form_over_http11_only() {
        let handshake = [
            ("host", "a"),
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "WebSocket"),
            ("sec-websocket-key", "k"),
        ];
        let mut h = map(&handshake);
        strip_request(&mut h, true).unwrap();
        assert_eq!(h["connection"], "Upgrade");
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["sec-websocket-key"], "k");

        let mut h = map(&handshake);
        strip_request(&mut h, false).unwrap();
        assert!(h.get("connection").is_none() && h.get("upgrade").is_none());
    }

    #[test]
    fn request_nominations_are_refused_as_pingora_refuses_them() {
        let refused = |v: &str| strip_request(&mut map(&[("connection", v)]), true).unwrap_err();
        assert_eq!(refused("close, X-Forwarded-For"), Nomination::Protected);
        assert_eq!(refused("host"), Nomination::Protected);
        assert_eq!(refused(":authority"), Nomination::Protected);
        assert_eq!(refused("\"x-a\""), Nomination::Malformed);
        assert_eq!(refused("a,b,c,d,e,f,g,h,i,j"), Nomination::TooMany);
        strip_request(&mut map(&[("connection", "a,b,c,d,e,f,g,h,i")]), true).unwrap();
    }

    #[test]
    fn response_loses_hop_by_hop_and_listed_headers() {
        let mut h = map(&[
            ("connection", "close, X-Secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("trailer", "x-checksum"),
            ("server", "upstream"),
            ("x-kept", "1"),
        ]);
        strip_response(&mut h);
        assert_eq!(names(&h), ["connection", "server", "x-kept"]);

        let mut h = map(&[("content-type", "text/plain"), ("x-kept", "1")]);
        strip_response(&mut h);
        assert_eq!(names(&h), ["content-type", "x-kept"]);
    }
}
