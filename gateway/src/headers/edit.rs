//! Changing the headers of a request or response head in place, without pingora's
//! header-case map, and removing headers by one look at each name (the hop-by-hop
//! stripping in `hop_by_hop.rs` and a route's `remove` list use it).

use http::header::{HeaderMap, HeaderName, HeaderValue};
use pingora_core::{ErrorType, OrErr};
use pingora_http::{RequestHeader, ResponseHeader};

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

/// Removes every header whose name `doomed` picks. Each name is looked at, but only
/// those removed are hashed: cheaper than a `remove` per candidate name, which hashes
/// and probes for each although the header is almost never there.
pub fn remove_where(h: &mut HeaderMap, doomed: impl Fn(&HeaderName) -> bool) {
    while let Some(name) = h.keys().find(|n| doomed(n)).cloned() {
        h.remove(&name);
    }
}

/// [`remove_where`] for a list of names held elsewhere (a route's `remove`): the name
/// removed is the list's own, so nothing is cloned or collected.
pub fn remove_listed(h: &mut HeaderMap, names: &[HeaderName]) {
    while let Some(name) = h.keys().find_map(|k| names.iter().find(|n| *n == k)) {
        h.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::X_REQUEST_ID;

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
    fn remove_where_removes_every_value_of_picked_names_only() {
        let mut h = HeaderMap::new();
        h.append("x-a", HeaderValue::from_static("1"));
        h.append("x-a", HeaderValue::from_static("2"));
        h.insert("x-b", HeaderValue::from_static("3"));
        remove_where(&mut h, |n| n == "x-a");
        assert!(h.get("x-a").is_none());
        assert_eq!(h["x-b"], "3");
        remove_where(&mut h, |_| false);
        assert_eq!(h.len(), 1);
        h.append("x-a", HeaderValue::from_static("1"));
        h.append("x-a", HeaderValue::from_static("2"));
        h.insert("x-c", HeaderValue::from_static("4"));
        remove_listed(
            &mut h,
            &[
                HeaderName::from_static("x-a"),
                HeaderName::from_static("x-c"),
            ],
        );
        assert_eq!(h.keys().collect::<Vec<_>>(), ["x-b"]);
    }
}
