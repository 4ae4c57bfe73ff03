//! `[cors.NAME]`: allowed origins (exact, `https://*.example.com` or `*`), methods and
//! headers, checked once so the request path only compares.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::{HeaderName, Method};

use super::{at, key, valid_dns_name, Validator};
use crate::config::defaults;
use crate::config::doc::Seg;
use crate::config::schema;
use crate::config::{Cors, OriginMatch};

impl Validator<'_> {
    pub(super) fn cors_policies(&mut self, m: BTreeMap<String, schema::CorsSection>) -> Vec<Cors> {
        let mut out = Vec::new();
        for (name, c) in m {
            let base = [key("cors"), key(&name)];
            if c.allow_origins.is_empty() {
                self.err(
                    &at(&base, "allow_origins"),
                    "list at least one origin, e.g. \"https://app.example.com\"",
                );
            }
            let mut origins = Vec::new();
            for (i, o) in c.allow_origins.iter().enumerate() {
                let mut path = at(&base, "allow_origins");
                path.push(Seg::Index(i));
                match parse_origin(o) {
                    Ok(m) => origins.push(m),
                    Err(msg) => self.err(&path, msg),
                }
            }
            if c.allow_credentials && origins.contains(&OriginMatch::Any) {
                self.err(
                    &at(&base, "allow_credentials"),
                    "browsers refuse \"*\" together with credentials: list the allowed origins instead",
                );
            }
            let method_names: Vec<String> = c.allow_methods.clone().unwrap_or_else(|| {
                defaults::CORS_METHODS
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect()
            });
            let mut methods = Vec::new();
            for (i, m) in method_names.iter().enumerate() {
                match Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
                    Ok(m) => methods.push(m),
                    Err(_) => {
                        let mut path = at(&base, "allow_methods");
                        path.push(Seg::Index(i));
                        self.err(&path, format!("invalid method {m:?}"));
                    }
                }
            }
            let mut names = |k: &str, list: &[String]| -> Vec<String> {
                let mut v = Vec::new();
                for (i, h) in list.iter().enumerate() {
                    if HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()).is_err() {
                        let mut path = at(&base, k);
                        path.push(Seg::Index(i));
                        self.err(&path, format!("invalid header name {h:?}"));
                    } else {
                        v.push(h.to_ascii_lowercase());
                    }
                }
                v
            };
            let headers = names("allow_headers", &c.allow_headers);
            let expose = names("expose_headers", &c.expose_headers);
            let max_age = self.positive_opt(&at(&base, "max_age"), c.max_age);
            out.push(Cors {
                name: Arc::from(name.as_str()),
                origins,
                methods,
                headers,
                expose,
                credentials: c.allow_credentials,
                max_age,
            });
        }
        out
    }
}

/// `*`, `https://app.example.com[:port]`, or `https://*.example.com`.
fn parse_origin(o: &str) -> Result<OriginMatch, String> {
    if o == "*" {
        return Ok(OriginMatch::Any);
    }
    let bad = || {
        format!("invalid origin {o:?}: write \"https://app.example.com\", \"https://*.example.com\" or \"*\" (no path)")
    };
    let (scheme, rest) = o.split_once("://").ok_or_else(bad)?;
    if scheme != "http" && scheme != "https" {
        return Err(bad());
    }
    let host =
        rest.rsplit_once(':').map_or(
            rest,
            |(h, port)| if port.parse::<u16>().is_ok() { h } else { rest },
        );
    if let Some(suffix) = host.strip_prefix("*.") {
        if valid_dns_name(suffix) && host.len() == rest.len() {
            return Ok(OriginMatch::Suffix {
                scheme: format!("{scheme}://"),
                suffix: format!(".{}", suffix.to_ascii_lowercase()),
            });
        }
        return Err(bad());
    }
    if valid_dns_name(host) || host.parse::<std::net::IpAddr>().is_ok() || host.starts_with('[') {
        Ok(OriginMatch::Exact(o.to_ascii_lowercase()))
    } else {
        Err(bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        assert_eq!(parse_origin("*"), Ok(OriginMatch::Any));
        assert_eq!(
            parse_origin("https://App.example.com"),
            Ok(OriginMatch::Exact("https://app.example.com".into()))
        );
        assert_eq!(
            parse_origin("http://localhost:3000"),
            Ok(OriginMatch::Exact("http://localhost:3000".into()))
        );
        assert_eq!(
            parse_origin("https://*.example.com"),
            Ok(OriginMatch::Suffix {
                scheme: "https://".into(),
                suffix: ".example.com".into()
            })
        );
        assert!(parse_origin("https://app.example.com/path").is_err());
        assert!(parse_origin("app.example.com").is_err());
        assert!(parse_origin("ftp://x.com").is_err());
    }
}
