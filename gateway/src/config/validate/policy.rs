//! Validation of the edge-policy sections: `[headers]`, `[limits]`, `[rate_limits.*]`,
//! and each route's policy keys merged over `[route_defaults]` (`[cors.*]`: `cors.rs`).

use std::collections::BTreeMap;
use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use ipnet::IpNet;

use super::{at, key, Validator};
use crate::config::defaults;
use crate::config::doc::Seg;
use crate::config::schema::{self, RateKeyKind};
use crate::config::{Fallback, HeaderPolicy, Limits, RateKey, RateLimit, RoutePolicy, Scope};

/// Names defined in the file, for cross-references.
pub struct Names {
    pub rate_limits: Vec<String>,
    pub cors: Vec<String>,
    pub compression: Vec<String>,
}

/// A policy section with references resolved; `None` means "not set here".
#[derive(Default)]
pub struct Resolved {
    rate_limits: Option<Vec<usize>>,
    cors: Option<usize>,
    /// `Some(None)`: the route says `compression = "off"`.
    compression: Option<Option<usize>>,
    allow: Option<Vec<IpNet>>,
    deny: Option<Vec<IpNet>>,
    max_body_size: Option<u64>,
    request_buffer: Option<u64>,
    headers: Option<HeaderPolicy>,
}

/// A route's effective policy: its own keys, else `[route_defaults]`, else globals.
pub fn merge(
    own: Resolved,
    defaults: &Resolved,
    global: &HeaderPolicy,
    limits: &Limits,
) -> RoutePolicy {
    let mut headers = global.clone();
    if let Some(delta) = own.headers.as_ref().or(defaults.headers.as_ref()) {
        for (name, value) in &delta.set {
            headers.set.retain(|(n, _)| n != name);
            headers.remove.retain(|n| n != name);
            headers.set.push((name.clone(), value.clone()));
        }
        for name in &delta.remove {
            headers.set.retain(|(n, _)| n != name);
            if !headers.remove.contains(name) {
                headers.remove.push(name.clone());
            }
        }
    }
    RoutePolicy {
        rate_limits: own
            .rate_limits
            .or_else(|| defaults.rate_limits.clone())
            .unwrap_or_default(),
        cors: own.cors.or(defaults.cors),
        compression: own.compression.or(defaults.compression).flatten(),
        allow: own
            .allow
            .or_else(|| defaults.allow.clone())
            .unwrap_or_default(),
        deny: own
            .deny
            .or_else(|| defaults.deny.clone())
            .unwrap_or_default(),
        max_body_size: own
            .max_body_size
            .or(defaults.max_body_size)
            .unwrap_or(limits.max_body_size),
        request_buffer: own
            .request_buffer
            .or(defaults.request_buffer)
            .unwrap_or(limits.request_buffer),
        headers,
    }
}

/// Headers the gateway must own: framing and connection management.
const RESERVED: [&str; 6] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "keep-alive",
    "x-request-id",
];

impl Validator<'_> {
    fn header_name(&mut self, path: &[Seg], name: &str) -> Option<String> {
        let lower = name.to_ascii_lowercase();
        if HeaderName::from_bytes(lower.as_bytes()).is_err() {
            self.err(path, format!("invalid header name {name:?}"));
            return None;
        }
        if RESERVED.contains(&lower.as_str()) {
            self.err(
                path,
                format!("header {name:?} is managed by the gateway and cannot be set or removed"),
            );
            return None;
        }
        Some(lower)
    }

    fn header_set(
        &mut self,
        base: &[Seg],
        set: &BTreeMap<String, String>,
    ) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (name, value) in set {
            let path = at(base, name);
            let Some(lower) = self.header_name(&path, name) else {
                continue;
            };
            if HeaderValue::from_str(value).is_err() {
                self.err(
                    &path,
                    format!("invalid value for header {name:?} (printable ASCII only)"),
                );
                continue;
            }
            out.push((lower, value.clone()));
        }
        out
    }

    fn header_remove(&mut self, base: &[Seg], names: &[String]) -> Vec<String> {
        let mut out = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let mut path = base.to_vec();
            path.push(Seg::Index(i));
            if let Some(n) = self.header_name(&path, name) {
                out.push(n);
            }
        }
        out
    }

    pub(super) fn header_policy(&mut self, h: schema::HeadersSection) -> HeaderPolicy {
        let base = [key("headers")];
        let mut set: Vec<(String, String)> = Vec::new();
        if h.security_defaults.unwrap_or(true) {
            set.extend(
                defaults::SECURITY_HEADERS
                    .iter()
                    .map(|(n, v)| ((*n).to_owned(), (*v).to_owned())),
            );
        }
        if let Some(csp) = &h.content_security_policy {
            if HeaderValue::from_str(csp).is_err() || csp.is_empty() {
                self.err(
                    &at(&base, "content_security_policy"),
                    "invalid Content-Security-Policy value",
                );
            } else {
                set.push(("content-security-policy".to_owned(), csp.clone()));
            }
        }
        for (name, value) in self.header_set(&at(&base, "set"), &h.set) {
            set.retain(|(n, _)| *n != name);
            set.push((name, value));
        }
        let remove = match &h.remove {
            Some(list) => self.header_remove(&at(&base, "remove"), list),
            None => defaults::REMOVE.iter().map(|s| (*s).to_owned()).collect(),
        };
        set.retain(|(n, _)| !remove.contains(n));
        HeaderPolicy { set, remove }
    }

    pub(super) fn limits(&mut self, l: &schema::LimitsSection) -> Limits {
        let max_header_size = l.max_header_size.map_or(defaults::MAX_HEADER_SIZE, |s| s.0);
        if max_header_size < 1024 {
            self.err(
                &[key("limits"), key("max_header_size")],
                "must be at least 1KiB",
            );
        }
        Limits {
            max_body_size: l.max_body_size.map_or(defaults::MAX_BODY_SIZE, |s| s.0),
            request_buffer: self
                .request_buffer(&[key("limits"), key("request_buffer")], l.request_buffer)
                .unwrap_or(defaults::REQUEST_BUFFER),
            max_header_size,
            header_timeout: self.positive(
                &[key("limits"), key("header_timeout")],
                l.header_timeout,
                defaults::HEADER_TIMEOUT,
            ),
            body_timeout: self.positive(
                &[key("limits"), key("body_timeout")],
                l.body_timeout,
                defaults::BODY_TIMEOUT,
            ),
            // Zero is allowed here: it turns keep-alive off, as in nginx.
            keepalive_timeout: l
                .keepalive_timeout
                .map_or(defaults::KEEPALIVE_TIMEOUT, |d| d.0),
            max_connections_per_client: l.max_connections_per_client.unwrap_or(0),
            max_connections: l.max_connections.unwrap_or(defaults::MAX_CONNECTIONS),
        }
    }

    /// `0` (off) or at least what pingora's body buffer holds: a chunked body is read
    /// through that buffer, so a smaller setting could not be honoured for it.
    fn request_buffer(&mut self, path: &[Seg], size: Option<schema::Size>) -> Option<u64> {
        let n = size?.0;
        if n != 0 && n < defaults::MIN_REQUEST_BUFFER {
            self.err(path, "must be \"0\" (off) or at least 64KiB");
        }
        Some(n)
    }

    pub(super) fn rate_limits(
        &mut self,
        m: BTreeMap<String, schema::RateLimitSection>,
        has_store: bool,
    ) -> Vec<RateLimit> {
        let mut out = Vec::new();
        for (name, r) in m {
            let base = [key("rate_limits"), key(&name)];
            let burst = match r.burst {
                Some(0) => {
                    self.err(&at(&base, "burst"), "must be at least 1");
                    1
                }
                Some(b) => b,
                None => r.rate.count,
            };
            let key_kind = r.key.unwrap_or(RateKeyKind::Address);
            let rate_key = match (key_kind, &r.header) {
                (RateKeyKind::Header, Some(h)) => {
                    match HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()) {
                        Ok(h) => RateKey::Header(h),
                        Err(_) => {
                            self.err(&at(&base, "header"), format!("invalid header name {h:?}"));
                            RateKey::Address
                        }
                    }
                }
                (RateKeyKind::Header, None) => {
                    self.err(
                        &at(&base, "key"),
                        "key = \"header\" needs `header = \"Name\"` (e.g. \"Authorization\")",
                    );
                    RateKey::Address
                }
                (_, Some(_)) => {
                    self.err(
                        &at(&base, "header"),
                        "`header` is only used with key = \"header\"",
                    );
                    RateKey::Address
                }
                (RateKeyKind::Address, None) => RateKey::Address,
                (RateKeyKind::Global, None) => RateKey::Global,
            };
            let ipv6_prefix = r.ipv6_prefix.unwrap_or(defaults::IPV6_PREFIX);
            if !(1..=128).contains(&ipv6_prefix) {
                self.err(&at(&base, "ipv6_prefix"), "must be between 1 and 128");
            }
            let max_keys = r.max_keys.unwrap_or(defaults::MAX_KEYS);
            if max_keys == 0 {
                self.err(&at(&base, "max_keys"), "must be at least 1");
            }
            let exempt_paths = r.exempt_paths.unwrap_or_else(|| {
                defaults::EXEMPT_PATHS
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect()
            });
            for (i, p) in exempt_paths.iter().enumerate() {
                if !p.starts_with('/') {
                    let mut path = at(&base, "exempt_paths");
                    path.push(Seg::Index(i));
                    self.err(&path, format!("path {p:?} must start with '/'"));
                }
            }
            let fallback = match r.fallback {
                Some(schema::FallbackKind::Local) | None => Fallback::Local,
                Some(schema::FallbackKind::Allow) => Fallback::Allow,
                Some(schema::FallbackKind::Deny) => Fallback::Deny,
            };
            let scope = match r.scope {
                Some(schema::ScopeKind::Cluster) => {
                    if !has_store {
                        self.err(
                            &at(&base, "scope"),
                            "scope = \"cluster\" counts in the shared store: add a [store] section",
                        );
                    }
                    Scope::Cluster(fallback)
                }
                Some(schema::ScopeKind::Local) | None => {
                    if r.fallback.is_some() {
                        self.err(
                            &at(&base, "fallback"),
                            "`fallback` is only used with scope = \"cluster\"",
                        );
                    }
                    Scope::Local
                }
            };
            out.push(RateLimit {
                name: Arc::from(name.as_str()),
                count: r.rate.count,
                period: r.rate.period,
                burst,
                key: rate_key,
                ipv6_prefix: ipv6_prefix.clamp(1, 128),
                max_keys: max_keys.max(1),
                exempt_paths,
                scope,
            });
        }
        out
    }

    pub(super) fn resolve_policy(
        &mut self,
        base: &[Seg],
        p: &schema::PolicySection,
        names: &Names,
    ) -> Resolved {
        let rate_limits = p.rate_limits.as_ref().map(|list| {
            let mut idx = Vec::new();
            for (i, n) in list.iter().enumerate() {
                match names.rate_limits.iter().position(|x| x == n) {
                    Some(j) if !idx.contains(&j) => idx.push(j),
                    Some(_) => {}
                    None => {
                        let mut path = at(base, "rate_limits");
                        path.push(Seg::Index(i));
                        let known = if names.rate_limits.is_empty() {
                            "none are defined".to_owned()
                        } else {
                            names.rate_limits.join(", ")
                        };
                        self.err(
                            &path,
                            format!("no rate limit named {n:?} (rate_limits: {known})"),
                        );
                    }
                }
            }
            idx
        });
        let cors = p
            .cors
            .as_ref()
            .and_then(|n| match names.cors.iter().position(|x| x == n) {
                Some(j) => Some(j),
                None => {
                    let known = if names.cors.is_empty() {
                        "none are defined".to_owned()
                    } else {
                        names.cors.join(", ")
                    };
                    self.err(
                        &at(base, "cors"),
                        format!("no cors policy named {n:?} (cors: {known})"),
                    );
                    None
                }
            });
        let compression = p.compression.as_ref().map(|n| {
            if n == "off" {
                return None;
            }
            let found = names.compression.iter().position(|x| x == n);
            if found.is_none() {
                let known = if names.compression.is_empty() {
                    "none are defined".to_owned()
                } else {
                    names.compression.join(", ")
                };
                self.err(
                    &at(base, "compression"),
                    format!("no compression policy named {n:?} (compression: {known}; \"off\" turns it off)"),
                );
            }
            found
        });
        let headers = p.headers.as_ref().map(|h| {
            let hb = at(base, "headers");
            HeaderPolicy {
                set: self.header_set(&at(&hb, "set"), &h.set),
                remove: self.header_remove(&at(&hb, "remove"), &h.remove),
            }
        });
        Resolved {
            rate_limits,
            cors,
            compression,
            allow: p.allow.as_ref().map(|l| l.iter().map(|c| c.0).collect()),
            deny: p.deny.as_ref().map(|l| l.iter().map(|c| c.0).collect()),
            max_body_size: p.max_body_size.map(|s| s.0),
            request_buffer: self.request_buffer(&at(base, "request_buffer"), p.request_buffer),
            headers,
        }
    }
}
