//! What a request head says about its size and its body: the head's size, the
//! declared body length, and the trace pingora leaves of a request that declared its
//! body two ways (a smuggling attempt).

use pingora_http::RequestHeader;

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
