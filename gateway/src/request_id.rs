//! Request ids: keep a client's `X-Request-ID` when it is sane, else make a new one.

use http::HeaderValue;

/// A request id, held as the header value it is sent as: the upstream request and the
/// response share its one buffer, where a `String` was copied into a new value for each.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// Only sane values (printable ASCII, `is_sane`) are ever held, so this is the whole
    /// id; the empty fallback cannot be reached.
    pub fn as_str(&self) -> &str {
        self.0.to_str().unwrap_or_default()
    }

    /// The id as a header value (a reference count, not a copy).
    pub fn header(&self) -> HeaderValue {
        self.0.clone()
    }
}

impl Default for RequestId {
    fn default() -> Self {
        RequestId(HeaderValue::from_static(""))
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Printable ASCII without spaces, 1 to 128 bytes: safe to log, echo and forward.
pub fn is_sane(v: &[u8]) -> bool {
    !v.is_empty() && v.len() <= 128 && v.iter().all(|b| b.is_ascii_graphic())
}

/// A fresh random (v4) UUID in its hyphenated form.
pub fn generate() -> RequestId {
    let mut buf = uuid::Uuid::encode_buffer();
    let text = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
    // A hyphenated UUID is always a valid header value; the fallback cannot be reached.
    RequestId(HeaderValue::from_str(text).unwrap_or(HeaderValue::from_static("-")))
}

/// The id for this request: the client's if sane (shared with the request's header,
/// not copied), else a new one.
pub fn choose(incoming: Option<&HeaderValue>) -> RequestId {
    match incoming {
        Some(v) if is_sane(v.as_bytes()) => RequestId(v.clone()),
        _ => generate(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick(v: &[u8]) -> String {
        choose(Some(&HeaderValue::from_bytes(v).unwrap()))
            .as_str()
            .to_owned()
    }

    #[test]
    fn keeps_sane_replaces_insane() {
        assert_eq!(pick(b"abc-123_XYZ"), "abc-123_XYZ");
        assert_eq!(pick(&[b'a'; 128]).len(), 128);
        assert_eq!(pick(&[b'a'; 129]).len(), 36);
        assert_eq!(pick(b"has space").len(), 36);
        assert_eq!(pick(b"").len(), 36);
        assert_eq!(pick("é".as_bytes()).len(), 36);
        assert_eq!(choose(None).as_str().len(), 36);
        assert_ne!(generate(), generate());
    }
}
