//! Response header rules (security headers, custom headers, removals), with names and
//! values parsed once at config load.

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::config::HeaderPolicy;
use crate::headers::remove_listed;

#[derive(Debug, Default)]
pub struct HeaderRules {
    set: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

impl HeaderRules {
    /// Names and values were validated by the config loader; anything that still fails
    /// to parse is skipped rather than panicking.
    pub fn compile(p: &HeaderPolicy) -> Self {
        HeaderRules {
            set: p
                .set
                .iter()
                .filter_map(|(n, v)| {
                    Some((
                        HeaderName::from_bytes(n.as_bytes()).ok()?,
                        HeaderValue::from_str(v).ok()?,
                    ))
                })
                .collect(),
            remove: p
                .remove
                .iter()
                .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
                .collect(),
        }
    }

    /// How many headers `apply` may add.
    pub fn added(&self) -> usize {
        self.set.len()
    }

    pub fn apply(&self, h: &mut HeaderMap) {
        // One look at each header, not a hash and probe per name on the list (the
        // defaults name two, often absent).
        remove_listed(h, &self.remove);
        for (name, value) in &self.set {
            // A name parsed at load is shared, not copied, by the clone.
            h.insert(name.clone(), value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_overrides_and_removes() {
        let rules = HeaderRules::compile(&HeaderPolicy {
            set: vec![("x-frame-options".into(), "DENY".into())],
            remove: vec!["server".into()],
        });
        let mut h = HeaderMap::new();
        h.insert("server", "upstream".parse().unwrap());
        h.insert("x-frame-options", "SAMEORIGIN".parse().unwrap());
        rules.apply(&mut h);
        assert!(h.get("server").is_none());
        assert_eq!(h.get_all("x-frame-options").iter().count(), 1);
        assert_eq!(h["x-frame-options"], "DENY");
    }
}
