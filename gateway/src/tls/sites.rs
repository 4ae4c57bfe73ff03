//! Which site a request's Host belongs to (for the HTTP->HTTPS redirect and HSTS), with
//! header values prepared once per snapshot.

// FxHash: the host is looked up on every request, and the keys come from the config
// (a client only looks up), so a keyed hash buys nothing here.
use rustc_hash::FxHashMap as HashMap;

use http::HeaderValue;

use crate::config::Config;

pub const ACME_CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

#[derive(Debug, Default)]
pub struct SiteTable {
    exact: HashMap<String, usize>,
    /// `example.com` -> site, from `*.example.com` (a wildcard covers one label).
    wildcard: HashMap<String, usize>,
    redirect: Vec<Option<u16>>,
    hsts: Vec<Option<HeaderValue>>,
    /// The port of the first HTTPS listener, for redirect targets (omitted when 443).
    pub https_port: Option<u16>,
    /// The site that issues certificates on demand: names it issued belong to it.
    pub on_demand: Option<usize>,
}

impl SiteTable {
    pub fn new(config: &Config) -> Self {
        let mut t = SiteTable {
            https_port: config
                .listeners
                .iter()
                .find(|l| l.tls)
                .map(|l| l.address.port()),
            on_demand: config.on_demand_site().map(|(i, _, _)| i),
            ..Default::default()
        };
        for (i, s) in config.sites.iter().enumerate() {
            for n in &s.names {
                match n.strip_prefix("*.") {
                    Some(suffix) => t.wildcard.insert(suffix.to_owned(), i),
                    None => t.exact.insert(n.clone(), i),
                };
            }
            t.redirect.push(s.redirect);
            t.hsts.push(
                s.hsts
                    .as_deref()
                    .and_then(|v| HeaderValue::from_str(v).ok()),
            );
        }
        t
    }

    /// The site for `host` (lowercase-insensitive, no port).
    pub fn find(&self, host: &str) -> Option<usize> {
        let lowered = crate::headers::ascii_lowercase(host);
        let host = lowered.as_ref();
        if let Some(&i) = self.exact.get(host) {
            return Some(i);
        }
        if self.wildcard.is_empty() {
            return None;
        }
        let (_, parent) = host.split_once('.')?;
        self.wildcard.get(parent).copied()
    }

    /// The redirect status for a plain-HTTP request to `site`, if it redirects.
    pub fn redirect(&self, site: Option<usize>) -> Option<u16> {
        self.https_port?;
        site.and_then(|i| self.redirect.get(i).copied().flatten())
    }

    /// The HSTS value for an HTTPS response: the site's, or the first site's when the
    /// Host matches none (an IP, say).
    pub fn hsts(&self, site: Option<usize>) -> Option<&HeaderValue> {
        self.hsts.get(site.unwrap_or(0)).and_then(Option::as_ref)
    }

    /// `https://host[:port]/path?query` for a redirect.
    pub fn location(&self, host: &str, path_and_query: &str) -> String {
        match self.https_port {
            Some(443) | None => format!("https://{host}{path_and_query}"),
            Some(p) => format!("https://{host}:{p}{path_and_query}"),
        }
    }
}
