//! Request ids: keep a client's `X-Request-ID` when it is sane, else make a new one.

/// Printable ASCII without spaces, 1 to 128 bytes: safe to log, echo and forward.
pub fn is_sane(v: &[u8]) -> bool {
    !v.is_empty() && v.len() <= 128 && v.iter().all(|b| b.is_ascii_graphic())
}

/// A fresh random (v4) UUID in its hyphenated form.
pub fn generate() -> String {
    let mut buf = uuid::Uuid::encode_buffer();
    uuid::Uuid::new_v4()
        .hyphenated()
        .encode_lower(&mut buf)
        .to_owned()
}

/// The id for this request: the client's if sane, else a new one.
pub fn choose(incoming: Option<&[u8]>) -> String {
    match incoming {
        // is_sane guarantees ASCII, so the conversion cannot fail.
        Some(v) if is_sane(v) => String::from_utf8_lossy(v).into_owned(),
        _ => generate(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_sane_replaces_insane() {
        assert_eq!(choose(Some(b"abc-123_XYZ")), "abc-123_XYZ");
        assert_eq!(choose(Some(&[b'a'; 128])).len(), 128);
        assert_eq!(choose(Some(&[b'a'; 129])).len(), 36);
        assert_eq!(choose(Some(b"has space")).len(), 36);
        assert_eq!(choose(Some(b"ctl\x01")).len(), 36);
        assert_eq!(choose(Some(b"")).len(), 36);
        assert_eq!(choose(Some("é".as_bytes())).len(), 36);
        assert_ne!(generate(), generate());
    }
}
