//! Response header rules (security headers, custom headers, removals), with names and
//! values parsed once at config load.

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use pingora_http::ResponseHeader;

use crate::config::HeaderPolicy;

#[derive(Debug, Default)]
pub struct HeaderRules {
    /// Names as the config spells them: pingora keeps a `Bytes` name as the header's
    /// case without copying it (a non-standard `HeaderName` would be copied per insert).
    set: Vec<(Bytes, HeaderValue)>,
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
                    HeaderName::from_bytes(n.as_bytes()).ok()?;
                    Some((Bytes::from(n.clone()), HeaderValue::from_str(v).ok()?))
                })
                .collect(),
            remove: p
                .remove
                .iter()
                .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
                .collect(),
        }
    }

    pub fn apply(&self, resp: &mut ResponseHeader) -> pingora_core::Result<()> {
        for name in &self.remove {
            resp.remove_header(name);
        }
        for (name, value) in &self.set {
            resp.insert_header(name.clone(), value.clone())?;
        }
        Ok(())
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
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.insert_header("Server", "upstream").unwrap();
        resp.insert_header("X-Frame-Options", "SAMEORIGIN").unwrap();
        rules.apply(&mut resp).unwrap();
        assert!(resp.headers.get("server").is_none());
        assert_eq!(resp.headers.get_all("x-frame-options").iter().count(), 1);
        assert_eq!(resp.headers["x-frame-options"], "DENY");
    }
}
