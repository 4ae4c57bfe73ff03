//! Route lookup: `Router::resolve(host, path)`. Pure and allocation-free on the hot path.
//!
//! Precedence: routes for the exact host, then wildcard hosts (longest suffix first),
//! then routes without a host; inside the first group that has a match, the longest
//! path prefix wins. A prefix matches on segment boundaries: `/api` matches `/api`,
//! `/api/` and `/api/x`, never `/apix`; a prefix ending in `/` matches what starts with it.

// FxHash: the host is looked up on every request, and the keys come from the config
// (a client only looks up), so a keyed hash buys nothing here.
use rustc_hash::FxHashMap as HashMap;

use crate::config::{HostMatch, Route};

#[derive(Debug, Default)]
pub struct Router {
    routes: Vec<Route>,
    exact: HashMap<String, Vec<usize>>,
    /// (".example.com", routes), longest suffix first.
    suffix: Vec<(String, Vec<usize>)>,
    any: Vec<usize>,
}

impl Router {
    pub fn new(routes: Vec<Route>) -> Self {
        let mut r = Router {
            routes,
            ..Default::default()
        };
        for (i, route) in r.routes.iter().enumerate() {
            match &route.host {
                Some(HostMatch::Exact(h)) => r.exact.entry(h.clone()).or_default().push(i),
                Some(HostMatch::Suffix(s)) => match r.suffix.iter_mut().find(|(x, _)| x == s) {
                    Some((_, v)) => v.push(i),
                    None => r.suffix.push((s.clone(), vec![i])),
                },
                None => r.any.push(i),
            }
        }
        let by_len = |routes: &Vec<Route>, v: &mut Vec<usize>| {
            v.sort_by_key(|&i| std::cmp::Reverse(routes[i].path.len()))
        };
        for v in r.exact.values_mut() {
            by_len(&r.routes, v);
        }
        for (_, v) in r.suffix.iter_mut() {
            by_len(&r.routes, v);
        }
        by_len(&r.routes, &mut r.any);
        r.suffix.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        r
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// `host` without port, any case; `path` without the query string.
    pub fn resolve(&self, host: &str, path: &str) -> Option<&Route> {
        self.resolve_index(host, path).map(|i| &self.routes[i])
    }

    /// Like `resolve`, as an index into `routes()` (what a request context keeps).
    pub fn resolve_index(&self, host: &str, path: &str) -> Option<usize> {
        let lowered = crate::headers::ascii_lowercase(host);
        let host = lowered.as_ref();
        let groups = self
            .exact
            .get(host)
            .into_iter()
            .chain(
                self.suffix
                    .iter()
                    .filter(|(s, _)| host.ends_with(s.as_str()) && host.len() > s.len())
                    .map(|(_, v)| v),
            )
            .chain(std::iter::once(&self.any));
        for group in groups {
            if let Some(&i) = group
                .iter()
                .find(|&&i| prefix_matches(&self.routes[i].path, path))
            {
                return Some(i);
            }
        }
        None
    }
}

pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix.ends_with('/') {
        return path.starts_with(prefix);
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// The path the replica sees when the route strips its prefix (never empty).
pub fn strip_prefix<'a>(prefix: &str, path: &'a str) -> std::borrow::Cow<'a, str> {
    let rest = path
        .strip_prefix(prefix.trim_end_matches('/'))
        .unwrap_or(path);
    if rest.starts_with('/') {
        std::borrow::Cow::Borrowed(rest)
    } else {
        std::borrow::Cow::Owned(format!("/{rest}"))
    }
}

/// True when a path has a `.` or `..` segment (also percent-encoded): such a path could
/// escape the prefix a route was matched on once the replica normalises it.
pub fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|seg| {
        let mut dots = 0;
        let b = seg.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'.' {
                i += 1;
            } else if b.len() >= i + 3
                && b[i] == b'%'
                && b[i + 1] == b'2'
                && (b[i + 2] | 0x20) == b'e'
            {
                i += 3;
            } else {
                return false;
            }
            dots += 1;
        }
        dots == 1 || dots == 2
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn route(name: &str, host: Option<HostMatch>, path: &str) -> Route {
        Route {
            name: Arc::from(name),
            host,
            path: path.into(),
            strip_prefix: false,
            pool: 0,
            policy: Default::default(),
        }
    }

    fn router() -> Router {
        Router::new(vec![
            route("root", None, "/"),
            route("api", None, "/api"),
            route("auth", None, "/api/auth/"),
            route(
                "exact",
                Some(HostMatch::Exact("app.example.com".into())),
                "/",
            ),
            route(
                "wild",
                Some(HostMatch::Suffix(".example.com".into())),
                "/api",
            ),
        ])
    }

    fn name<'a>(r: &'a Router, host: &str, path: &str) -> Option<&'a str> {
        r.resolve(host, path).map(|r| &*r.name)
    }

    #[test]
    fn longest_prefix_wins_on_segment_boundaries() {
        let r = router();
        assert_eq!(name(&r, "localhost", "/api/auth/login"), Some("auth"));
        assert_eq!(name(&r, "localhost", "/api/items"), Some("api"));
        assert_eq!(name(&r, "localhost", "/api"), Some("api"));
        assert_eq!(name(&r, "localhost", "/apix"), Some("root"));
        assert_eq!(name(&r, "localhost", "/api/auth"), Some("api"));
    }

    #[test]
    fn exact_host_then_wildcard_then_any() {
        let r = router();
        assert_eq!(name(&r, "APP.example.com", "/api/x"), Some("exact"));
        assert_eq!(name(&r, "b.example.com", "/api/x"), Some("wild"));
        assert_eq!(name(&r, "b.example.com", "/other"), Some("root"));
        assert_eq!(
            name(&r, "example.com", "/api/x"),
            Some("api"),
            "a wildcard needs a label before the suffix"
        );
    }

    #[test]
    fn no_route_without_catch_all() {
        let r = Router::new(vec![route("api", None, "/api")]);
        assert_eq!(name(&r, "x", "/"), None);
    }

    #[test]
    fn strips_prefix_to_a_rooted_path() {
        assert_eq!(strip_prefix("/api", "/api/items"), "/items");
        assert_eq!(strip_prefix("/api", "/api"), "/");
        assert_eq!(strip_prefix("/api/", "/api/items"), "/items");
        assert_eq!(strip_prefix("/", "/x"), "/x");
    }

    #[test]
    fn dot_segments() {
        assert!(has_dot_segment("/api/../admin"));
        assert!(has_dot_segment("/api/%2E%2e/admin"));
        assert!(has_dot_segment("/api/./x"));
        assert!(has_dot_segment("/api/.%2e"));
        assert!(!has_dot_segment("/api/.well-known/x"));
        assert!(!has_dot_segment("/api/.../x"));
        assert!(!has_dot_segment("/a.b/c"));
    }
}
