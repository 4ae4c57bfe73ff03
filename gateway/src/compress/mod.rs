//! Response compression (zstd, brotli, gzip), as a route's `compression` policy says:
//! the coding is negotiated from `Accept-Encoding` by the rules (`negotiate.rs`), the
//! body is compressed as it streams (`encoder.rs`), and here is what decides whether a
//! response may be compressed at all, and what its headers must then say.
//!
//! Never compressed: a response already encoded, of a type not listed, marked
//! `Cache-Control: no-transform`, shorter than `min_length` (when its length is known),
//! a 1xx (WebSocket upgrades), 204, 206 or 304, or the answer to a request with `Range`
//! (the replica answers the range of the identity body). Every response that could have
//! been compressed says `Vary: Accept-Encoding`, compressed or not; a compressed one
//! loses its `Content-Length` and `Accept-Ranges`, and a strong `ETag` is weakened.
//! A HEAD is decided exactly like the GET, so its headers agree with the GET's.

pub mod encoder;
pub mod negotiate;
mod zstd_stream;

use std::sync::Arc;

use http::header::{
    ACCEPT_RANGES, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, ETAG, VARY,
};
use http::{HeaderMap, HeaderValue, StatusCode};

use crate::config::{Coding, Compression};

/// A media type pattern: `text/html`, `text/*`, `application/*+json`.
#[derive(Debug)]
struct TypeMatch {
    prefix: String,
    /// After the `*`, if there is one.
    suffix: Option<String>,
}

impl TypeMatch {
    fn new(t: &str) -> Self {
        match t.split_once('*') {
            Some((p, s)) => TypeMatch {
                prefix: p.to_owned(),
                suffix: Some(s.to_owned()),
            },
            None => TypeMatch {
                prefix: t.to_owned(),
                suffix: None,
            },
        }
    }

    fn matches(&self, media: &str) -> bool {
        match &self.suffix {
            None => media == self.prefix,
            Some(s) => {
                media.len() >= self.prefix.len() + s.len()
                    && media.starts_with(&self.prefix)
                    && media.ends_with(s.as_str())
            }
        }
    }
}

/// One `[compression.NAME]`, ready for the request path.
#[derive(Debug)]
pub struct CompiledCompression {
    pub name: Arc<str>,
    offered: Vec<Coding>,
    levels: Vec<(Coding, u32)>,
    min_length: u64,
    types: Vec<TypeMatch>,
}

/// What `Vary` gets on a response that could have been compressed.
const ACCEPT_ENCODING: HeaderValue = HeaderValue::from_static("accept-encoding");

impl CompiledCompression {
    pub fn compile(c: &Compression) -> Self {
        CompiledCompression {
            name: c.name.clone(),
            offered: c.encodings.iter().map(|(c, _)| *c).collect(),
            levels: c.encodings.clone(),
            min_length: c.min_length,
            types: c.types.iter().map(|t| TypeMatch::new(t)).collect(),
        }
    }

    /// The coding for this request's response, from its `Accept-Encoding`.
    pub fn choose(&self, accept: Option<&HeaderValue>) -> Option<Coding> {
        negotiate::choose(&self.offered, accept)
    }

    pub fn level(&self, c: Coding) -> u32 {
        self.levels
            .iter()
            .find(|(x, _)| *x == c)
            .map_or(1, |(_, l)| *l)
    }

    /// Whether a response of this status and these headers could be compressed for
    /// some request: then it varies on `Accept-Encoding`.
    pub fn candidate(&self, status: StatusCode, h: &HeaderMap) -> bool {
        let status_ok = status.is_success()
            && status != StatusCode::NO_CONTENT
            && status != StatusCode::PARTIAL_CONTENT
            || status == StatusCode::NOT_MODIFIED
            || status.is_client_error()
            || status.is_server_error();
        if !status_ok {
            return false;
        }
        let encoded = h
            .get(CONTENT_ENCODING)
            .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
        let no_transform = h.get_all(CACHE_CONTROL).iter().any(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|d| d.trim().eq_ignore_ascii_case("no-transform"))
            })
        });
        let typed = h
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .is_some_and(|media| self.types.iter().any(|t| t.matches(&media)));
        typed && !encoded && !no_transform
    }

    /// Whether this response (a candidate) is compressed with the chosen coding.
    pub fn applies(&self, status: StatusCode, h: &HeaderMap, range_request: bool) -> bool {
        if status == StatusCode::NOT_MODIFIED || range_request {
            return false;
        }
        let length = h
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        length.is_none_or(|n| n >= self.min_length)
    }
}

/// Adds `Accept-Encoding` to `Vary`, unless it (or `*`) is there already.
pub fn vary_on_accept_encoding(h: &mut HeaderMap) {
    let listed = h.get_all(VARY).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',').any(|t| {
                let t = t.trim();
                t == "*" || t.eq_ignore_ascii_case("accept-encoding")
            })
        })
    });
    if !listed {
        h.append(VARY, ACCEPT_ENCODING);
    }
}

/// The headers of a response that goes out compressed with `coding`: its length and
/// ranges no longer hold, and a strong validator becomes weak (RFC 9110 8.8.1: the
/// bytes differ from the identity body's).
pub fn mark_compressed(h: &mut HeaderMap, coding: Coding) {
    h.insert(CONTENT_ENCODING, HeaderValue::from_static(coding.name()));
    h.remove(CONTENT_LENGTH);
    h.remove(ACCEPT_RANGES);
    let etag = h.get(ETAG).map(|v| v.as_bytes().to_vec());
    match etag {
        Some(e) if e.starts_with(b"W/") => {}
        Some(e) if e.starts_with(b"\"") => {
            let mut weak = b"W/".to_vec();
            weak.extend_from_slice(&e);
            match HeaderValue::from_bytes(&weak) {
                Ok(v) => h.insert(ETAG, v),
                Err(_) => h.remove(ETAG),
            };
        }
        Some(_) => {
            h.remove(ETAG);
        }
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> CompiledCompression {
        CompiledCompression::compile(&Compression {
            name: Arc::from("t"),
            encodings: vec![(Coding::Zstd, 3), (Coding::Gzip, 5)],
            min_length: 100,
            types: vec![
                "text/*".into(),
                "application/json".into(),
                "application/*+json".into(),
            ],
        })
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn which_responses_could_be_compressed() {
        let p = policy();
        let ok = StatusCode::OK;
        assert!(p.candidate(
            ok,
            &headers(&[("content-type", "text/html; charset=utf-8")])
        ));
        assert!(p.candidate(
            ok,
            &headers(&[("content-type", "application/problem+json")])
        ));
        assert!(p.candidate(
            StatusCode::NOT_FOUND,
            &headers(&[("content-type", "application/json")])
        ));
        assert!(!p.candidate(ok, &headers(&[("content-type", "image/png")])));
        assert!(!p.candidate(ok, &headers(&[])), "no type: not guessed");
        assert!(!p.candidate(
            ok,
            &headers(&[("content-type", "text/html"), ("content-encoding", "gzip")])
        ));
        assert!(!p.candidate(
            ok,
            &headers(&[
                ("content-type", "text/html"),
                ("cache-control", "public, no-transform")
            ])
        ));
        for s in [
            StatusCode::NO_CONTENT,
            StatusCode::PARTIAL_CONTENT,
            StatusCode::SWITCHING_PROTOCOLS,
        ] {
            assert!(
                !p.candidate(s, &headers(&[("content-type", "text/html")])),
                "{s}"
            );
        }
        let nm = StatusCode::NOT_MODIFIED;
        assert!(
            p.candidate(nm, &headers(&[("content-type", "text/html")])),
            "304 varies too"
        );
        assert!(!p.applies(nm, &headers(&[]), false), "but has no body");
    }

    #[test]
    fn length_and_range() {
        let p = policy();
        let ok = StatusCode::OK;
        assert!(!p.applies(ok, &headers(&[("content-length", "99")]), false));
        assert!(p.applies(ok, &headers(&[("content-length", "100")]), false));
        assert!(
            p.applies(ok, &headers(&[]), false),
            "unknown length: streamed"
        );
        assert!(
            !p.applies(ok, &headers(&[]), true),
            "a Range request gets identity"
        );
    }

    #[test]
    fn headers_of_a_compressed_response() {
        let mut h = headers(&[
            ("content-length", "1234"),
            ("accept-ranges", "bytes"),
            ("etag", "\"abc\""),
            ("vary", "Origin"),
        ]);
        vary_on_accept_encoding(&mut h);
        vary_on_accept_encoding(&mut h);
        mark_compressed(&mut h, Coding::Zstd);
        assert_eq!(h["content-encoding"], "zstd");
        assert!(h.get("content-length").is_none() && h.get("accept-ranges").is_none());
        assert_eq!(h["etag"], "W/\"abc\"");
        let vary: Vec<_> = h.get_all("vary").iter().collect();
        assert_eq!(vary, ["Origin", "accept-encoding"], "added once");
        let mut weak = headers(&[("etag", "W/\"x\"")]);
        mark_compressed(&mut weak, Coding::Gzip);
        assert_eq!(weak["etag"], "W/\"x\"");
        let mut star = headers(&[("vary", "*")]);
        vary_on_accept_encoding(&mut star);
        assert_eq!(star.get_all("vary").iter().count(), 1);
    }
}
