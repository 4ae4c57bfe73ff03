//! `[[routes]]`: host and path matching, the pool each route sends to, and its
//! policy (merged by `policy.rs`).

use std::collections::HashSet;
use std::sync::Arc;

use super::{key, valid_dns_name, Validator};
use crate::config::doc::Seg;
use crate::config::schema;
use crate::config::{HostMatch, Route};

impl Validator<'_> {
    pub(super) fn routes(
        &mut self,
        routes: Vec<schema::RouteSection>,
        pool_names: &[String],
        policy_of: impl Fn(&mut Self, usize, &schema::RouteSection) -> crate::config::RoutePolicy,
    ) -> Vec<Route> {
        let mut out: Vec<Route> = Vec::new();
        let mut names = HashSet::new();
        let mut places = HashSet::new();
        for (i, r) in routes.into_iter().enumerate() {
            let at = |k: &str| vec![key("routes"), Seg::Index(i), key(k)];
            let host = match r.host.as_deref().map(parse_host) {
                Some(Err(m)) => {
                    self.err(&at("host"), m);
                    None
                }
                Some(Ok(h)) => Some(h),
                None => None,
            };
            let path = r.path.clone().unwrap_or_else(|| "/".to_owned());
            if !path.starts_with('/') || path.bytes().any(|b| !b.is_ascii_graphic()) {
                self.err(
                    &at("path"),
                    format!("path prefix {path:?} must start with '/' and contain no spaces"),
                );
            }
            let pool = match pool_names.iter().position(|p| *p == r.pool) {
                Some(i) => i,
                None => {
                    let known = if pool_names.is_empty() {
                        "none are defined".to_owned()
                    } else {
                        pool_names.join(", ")
                    };
                    self.err(
                        &at("pool"),
                        format!("no pool named {:?} (pools: {known})", r.pool),
                    );
                    0
                }
            };
            let name = r.name.clone().unwrap_or_else(|| match &r.host {
                Some(h) => format!("{h}{path}"),
                None => path.clone(),
            });
            if !places.insert((host.clone(), path.clone())) {
                let h = r.host.as_deref().unwrap_or("any host");
                self.err(
                    &at("path"),
                    format!("duplicate route: {h} with path {path:?} is already routed"),
                );
            } else if !names.insert(name.clone()) {
                self.err(&at("name"), format!("route name {name:?} is used twice"));
            }
            let policy = policy_of(self, i, &r);
            out.push(Route {
                name: Arc::from(name.as_str()),
                host,
                path,
                strip_prefix: r.strip_prefix,
                pool,
                policy,
            });
        }
        if out.is_empty() {
            self.err(
                &[key("routes")],
                "at least one [[routes]] entry is required",
            );
        }
        out
    }
}

fn parse_host(h: &str) -> Result<HostMatch, String> {
    let lower = h.to_ascii_lowercase();
    if let Some(rest) = lower.strip_prefix("*.") {
        if valid_dns_name(rest) {
            return Ok(HostMatch::Suffix(format!(".{rest}")));
        }
    } else if valid_dns_name(&lower) || lower.parse::<std::net::IpAddr>().is_ok() {
        return Ok(HostMatch::Exact(lower));
    }
    Err(format!("invalid host {h:?}: write a name like \"api.example.com\" or a wildcard like \"*.example.com\" (no port)"))
}
