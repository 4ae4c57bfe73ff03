//! CORS: preflights answered at the edge, allow headers on actual responses, with
//! every header value prepared at config load.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Method;

use crate::config::{Cors, OriginMatch};

pub struct CompiledCors {
    origins: Vec<OriginMatch>,
    credentials: bool,
    methods: Vec<Method>,
    allowed_headers: Vec<String>,
    allow_methods: HeaderValue,
    allow_headers: Option<HeaderValue>,
    expose: Option<HeaderValue>,
    max_age: Option<HeaderValue>,
}

fn joined(items: &[String]) -> Option<HeaderValue> {
    (!items.is_empty())
        .then(|| HeaderValue::from_str(&items.join(", ")).ok())
        .flatten()
}

const TRUE: HeaderValue = HeaderValue::from_static("true");
const STAR: HeaderValue = HeaderValue::from_static("*");
const ORIGIN: HeaderValue = HeaderValue::from_static("Origin");

impl CompiledCors {
    pub fn compile(c: &Cors) -> Self {
        let method_names: Vec<String> = c.methods.iter().map(|m| m.as_str().to_owned()).collect();
        CompiledCors {
            origins: c.origins.clone(),
            credentials: c.credentials,
            methods: c.methods.clone(),
            allowed_headers: c.headers.clone(),
            allow_methods: joined(&method_names).unwrap_or(HeaderValue::from_static("GET")),
            allow_headers: joined(&c.headers),
            expose: joined(&c.expose),
            max_age: c
                .max_age
                .and_then(|d| HeaderValue::from_str(&d.as_secs().to_string()).ok()),
        }
    }

    /// Whether `origin` (the request's `Origin` header) may read responses.
    pub fn allows(&self, origin: &str) -> bool {
        let lowered = crate::headers::ascii_lowercase(origin);
        let origin = lowered.as_ref();
        self.origins.iter().any(|m| match m {
            OriginMatch::Any => true,
            OriginMatch::Exact(o) => o == origin,
            OriginMatch::Suffix { scheme, suffix } => origin
                .strip_prefix(scheme.as_str())
                .is_some_and(|host_port| {
                    let host = host_port.rsplit_once(':').map_or(host_port, |(h, p)| {
                        if p.parse::<u16>().is_ok() {
                            h
                        } else {
                            host_port
                        }
                    });
                    host.ends_with(suffix.as_str())
                        && host.len() > suffix.len()
                        && !host_port.contains('/')
                }),
        })
    }

    fn origin_value(&self, origin: &HeaderValue) -> HeaderValue {
        if !self.credentials && self.origins.contains(&OriginMatch::Any) {
            STAR
        } else {
            origin.clone()
        }
    }

    /// Headers answering a preflight, or `None` when origin, method or a requested
    /// header is not allowed.
    pub fn preflight(
        &self,
        origin: &HeaderValue,
        method: &[u8],
        requested: Option<&HeaderValue>,
    ) -> Option<Vec<(HeaderName, HeaderValue)>> {
        if !self.allows(origin.to_str().ok()?) {
            return None;
        }
        let method = Method::from_bytes(method).ok()?;
        if !self.methods.contains(&method) {
            return None;
        }
        if let Some(req) = requested {
            let all_allowed = req
                .to_str()
                .ok()?
                .split(',')
                .map(|h| h.trim().to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .all(|h| self.allowed_headers.contains(&h));
            if !all_allowed {
                return None;
            }
        }
        let mut out = vec![
            (
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                self.origin_value(origin),
            ),
            (
                header::ACCESS_CONTROL_ALLOW_METHODS,
                self.allow_methods.clone(),
            ),
            (
                header::VARY,
                HeaderValue::from_static(
                    "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
                ),
            ),
        ];
        if let Some(h) = &self.allow_headers {
            out.push((header::ACCESS_CONTROL_ALLOW_HEADERS, h.clone()));
        }
        if self.credentials {
            out.push((header::ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE));
        }
        if let Some(a) = &self.max_age {
            out.push((header::ACCESS_CONTROL_MAX_AGE, a.clone()));
        }
        Some(out)
    }

    /// Adds the allow headers for an allowed `origin` (None: only `Vary: Origin`, so
    /// caches keep per-origin answers apart).
    pub fn apply(&self, origin: Option<&HeaderValue>, h: &mut HeaderMap) {
        h.append(header::VARY, ORIGIN);
        let Some(origin) = origin else { return };
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            self.origin_value(origin),
        );
        if self.credentials {
            h.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE);
        }
        if let Some(e) = &self.expose {
            h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, e.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn cors(origins: Vec<OriginMatch>, credentials: bool) -> CompiledCors {
        CompiledCors::compile(&Cors {
            name: Arc::from("c"),
            origins,
            methods: vec![Method::GET, Method::POST],
            headers: vec!["content-type".into(), "authorization".into()],
            expose: vec!["x-request-id".into()],
            credentials,
            max_age: Some(std::time::Duration::from_secs(600)),
        })
    }

    #[test]
    fn origin_matching() {
        let c = cors(
            vec![
                OriginMatch::Exact("https://app.example.com".into()),
                OriginMatch::Suffix {
                    scheme: "https://".into(),
                    suffix: ".example.org".into(),
                },
            ],
            true,
        );
        assert!(c.allows("https://app.example.com"));
        assert!(c.allows("https://APP.example.com"));
        assert!(!c.allows("http://app.example.com"));
        assert!(c.allows("https://a.b.example.org"));
        assert!(c.allows("https://a.example.org:8443"));
        assert!(!c.allows("https://example.org"));
        assert!(!c.allows("https://evil-example.org"));
        assert!(!c.allows("https://a.example.org.evil.com"));
    }

    #[test]
    fn preflight_checks_method_and_headers() {
        let c = cors(
            vec![OriginMatch::Exact("https://app.example.com".into())],
            true,
        );
        let o = HeaderValue::from_static("https://app.example.com");
        let h = c
            .preflight(
                &o,
                b"POST",
                Some(&HeaderValue::from_static("Content-Type, Authorization")),
            )
            .unwrap();
        assert!(h.contains(&(header::ACCESS_CONTROL_ALLOW_ORIGIN, o.clone())));
        assert!(h.contains(&(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE)));
        assert!(c.preflight(&o, b"DELETE", None).is_none());
        assert!(c
            .preflight(&o, b"POST", Some(&HeaderValue::from_static("x-other")))
            .is_none());
        assert!(c
            .preflight(&HeaderValue::from_static("https://evil.com"), b"GET", None)
            .is_none());
    }

    #[test]
    fn star_without_credentials() {
        let c = cors(vec![OriginMatch::Any], false);
        let mut h = HeaderMap::new();
        c.apply(Some(&HeaderValue::from_static("https://x.com")), &mut h);
        assert_eq!(h["access-control-allow-origin"], "*");
        assert_eq!(h["vary"], "Origin");
    }
}
