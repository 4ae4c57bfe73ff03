//! Private keys on their way to and from the store: sealed with AES-256-GCM (ring)
//! when `[store] encryption_key_env` gives a key, so whoever can read the Redis
//! database cannot read the keys. Every value says how it was written, so a value of
//! another kind (or garbage) is an error for that key, never a crash or a silent
//! misread.
//!
//! `enc:v1:` + base64(nonce || ciphertext || tag), or `plain:v1:` + the text.

use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

const SEALED: &str = "enc:v1:";
const PLAIN: &str = "plain:v1:";

/// Seals `text` with `key` (32 bytes), or marks it plain when there is no key.
pub fn seal(key: Option<&[u8]>, text: &str, context: &str) -> Result<String, String> {
    let Some(key) = key else {
        return Ok(format!("{PLAIN}{text}"));
    };
    let key = aead_key(key)?;
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| "no randomness for a nonce".to_owned())?;
    let mut data = text.as_bytes().to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(context.as_bytes()),
        &mut data,
    )
    .map_err(|_| "sealing failed".to_owned())?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&data);
    Ok(format!(
        "{SEALED}{}",
        base64::engine::general_purpose::STANDARD.encode(out)
    ))
}

/// Opens what [`seal`] wrote. `context` must be the one it was sealed with (the key's
/// name), so a sealed value copied under another name does not open.
pub fn open(key: Option<&[u8]>, value: &str, context: &str) -> Result<String, String> {
    if let Some(text) = value.strip_prefix(PLAIN) {
        return Ok(text.to_owned());
    }
    let Some(b64) = value.strip_prefix(SEALED) else {
        return Err("not a value this gateway writes (another version, or damaged)".into());
    };
    let Some(key) = key else {
        return Err("sealed, and no encryption key is configured (encryption_key_env)".into());
    };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| "sealed value is not valid base64".to_owned())?;
    if raw.len() < NONCE_LEN {
        return Err("sealed value too short".into());
    }
    let (nonce, data) = raw.split_at(NONCE_LEN);
    let mut data = data.to_vec();
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| "bad nonce".to_owned())?;
    let plain = aead_key(key)?
        .open_in_place(nonce, Aad::from(context.as_bytes()), &mut data)
        .map_err(|_| "cannot be opened with the configured key (a different key?)".to_owned())?;
    String::from_utf8(plain.to_vec()).map_err(|_| "opened to something that is not text".into())
}

fn aead_key(key: &[u8]) -> Result<LessSafeKey, String> {
    UnboundKey::new(&AES_256_GCM, key)
        .map(LessSafeKey::new)
        .map_err(|_| "the encryption key must be 32 bytes".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_name() {
        let key = [7u8; 32];
        let sealed = seal(Some(&key), "-----BEGIN PRIVATE KEY-----", "cert:a").unwrap();
        assert!(sealed.starts_with("enc:v1:"));
        assert!(!sealed.contains("PRIVATE"));
        assert_eq!(
            open(Some(&key), &sealed, "cert:a").unwrap(),
            "-----BEGIN PRIVATE KEY-----"
        );
        assert!(
            open(Some(&[8u8; 32]), &sealed, "cert:a").is_err(),
            "other key"
        );
        assert!(open(Some(&key), &sealed, "cert:b").is_err(), "other name");
        assert!(open(None, &sealed, "cert:a").is_err(), "no key");
        assert_ne!(
            sealed,
            seal(Some(&key), "-----BEGIN PRIVATE KEY-----", "cert:a").unwrap(),
            "a fresh nonce each time"
        );
    }

    #[test]
    fn plain_and_garbage() {
        assert_eq!(open(None, "plain:v1:abc", "x").unwrap(), "abc");
        assert_eq!(seal(None, "abc", "x").unwrap(), "plain:v1:abc");
        assert!(open(None, "garbage", "x").is_err());
        assert!(open(Some(&[1; 32]), "enc:v1:!!!", "x").is_err());
        assert!(open(Some(&[1; 32]), "enc:v1:AAAA", "x").is_err());
    }
}
