//! TLS-ALPN-01 (RFC 8737): the challenge certificates of ACME orders in flight, and the
//! hook on the HTTPS listeners that answers a CA's `acme-tls/1` handshake with them.
//!
//! Pingora's rustls listener offers `h2` and `http/1.1` only (its ALPN setting holds one
//! custom protocol at most), so a validation handshake never reaches our resolver with
//! `acme-tls/1` selectable. Pingora does run a pre-TLS hook on the raw TCP stream, though
//! (`hello.rs`): while an order waits for validation, it reads the ClientHello; a hello
//! that offers only `acme-tls/1` for a name we are validating is finished here with the
//! challenge certificate and closed, and every other connection gets its bytes back
//! untouched for pingora's own handshake.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::{Error, ErrorType};
use rcgen::{CertificateParams, CustomExtension, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{Acceptor, ClientHello, ResolvesServerCert, ServerConfig, ServerConnection};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The protocol id a CA offers, alone, when it validates TLS-ALPN-01.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// How long a client may take to send its ClientHello while an order is pending; the
/// listener's own handshake timeout still bounds the rest.
pub(super) const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest ClientHello we read before giving the bytes back (rustls refuses larger).
const HELLO_LIMIT: usize = 64 * 1024;

/// Names being validated right now -> the TLS config that presents their challenge
/// certificate.
#[derive(Default)]
pub struct AlpnChallenges {
    configs: DashMap<String, Arc<ServerConfig>>,
    pending: AtomicUsize,
}

impl AlpnChallenges {
    /// Presents a challenge certificate for `name` (RFC 8737 section 3: the name as its
    /// only SAN, the SHA-256 of the key authorization in the critical `acmeIdentifier`
    /// extension) until [`Self::remove`].
    pub fn insert(&self, name: &str, key_authorization_sha256: &[u8]) -> Result<(), String> {
        let config = challenge_config(name, key_authorization_sha256)?;
        if self
            .configs
            .insert(name.to_ascii_lowercase(), Arc::new(config))
            .is_none()
        {
            self.pending.fetch_add(1, Ordering::AcqRel);
        }
        Ok(())
    }

    pub fn remove(&self, name: &str) {
        if self.configs.remove(&name.to_ascii_lowercase()).is_some() {
            self.pending.fetch_sub(1, Ordering::AcqRel);
        }
    }

    pub(super) fn is_idle(&self) -> bool {
        self.pending.load(Ordering::Acquire) == 0
    }

    fn config_for(&self, name: &str) -> Option<Arc<ServerConfig>> {
        self.configs
            .get(&name.to_ascii_lowercase())
            .map(|c| Arc::clone(c.value()))
    }
}

fn challenge_config(name: &str, digest: &[u8]) -> Result<ServerConfig, String> {
    let mut params =
        CertificateParams::new(vec![name.to_owned()]).map_err(|e| format!("{name}: {e}"))?;
    params.custom_extensions = vec![CustomExtension::new_acme_identifier(digest)];
    let key = KeyPair::generate().map_err(|e| e.to_string())?;
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signing =
        rustls::crypto::ring::sign::any_supported_type(&key_der).map_err(|e| e.to_string())?;
    // Not `with_single_cert`: it parses the certificate with webpki, which refuses the
    // critical acmeIdentifier extension this certificate exists to carry.
    let certified = Arc::new(CertifiedKey::new(vec![cert.der().clone()], signing));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Always(certified)));
    config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
    Ok(config)
}

/// Presents one certificate whatever the hello says (the hook already matched the name).
#[derive(Debug)]
struct Always(Arc<CertifiedKey>);

impl ResolvesServerCert for Always {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
}

/// What the ClientHello asked for.
pub(super) enum Hello {
    /// Not a validation handshake for us: these bytes go back to the stream; the SNI
    /// (lowercase), if the client sent one.
    Pass(Vec<u8>, Option<String>),
    /// A CA validating `name`.
    Challenge(Box<ServerConnection>, String),
}

/// Answers a CA's validation handshake with the challenge certificate, then ends the
/// connection (it carries no HTTP): the error pingora gets to drop it.
pub(super) async fn answer(
    mut conn: Box<ServerConnection>,
    name: String,
    stream: &mut L4Stream,
) -> Box<Error> {
    let answered = tokio::time::timeout(HELLO_TIMEOUT, finish(&mut conn, stream)).await;
    match answered {
        Ok(Ok(())) => {
            tracing::info!(event = "acme_tls_alpn_answered", name = %name, "answered a TLS-ALPN-01 validation")
        }
        Ok(Err(e)) => {
            tracing::warn!(event = "acme_tls_alpn_failed", name = %name, error = %e, "a TLS-ALPN-01 validation handshake failed")
        }
        Err(_) => {
            tracing::warn!(event = "acme_tls_alpn_failed", name = %name, error = "timeout", "a TLS-ALPN-01 validation handshake failed")
        }
    }
    drop_connection("TLS-ALPN-01 validation answered")
}

pub(super) fn drop_connection(why: &str) -> Box<Error> {
    Error::explain(ErrorType::HandshakeError, why.to_owned())
}

/// Reads until rustls has the whole ClientHello, keeping every byte read.
pub(super) async fn read_hello(
    challenges: &AlpnChallenges,
    stream: &mut L4Stream,
) -> io::Result<Hello> {
    let mut acceptor = Acceptor::default();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        seen.extend_from_slice(&buf[..n]);
        let mut chunk = &buf[..n];
        while !chunk.is_empty() {
            acceptor.read_tls(&mut chunk)?;
        }
        let accepted = match acceptor.accept() {
            Ok(Some(accepted)) => accepted,
            Ok(None) if seen.len() < HELLO_LIMIT => continue,
            // Too long or not TLS: pingora's handshake answers it as it would anyway.
            Ok(None) | Err(_) => return Ok(Hello::Pass(seen, None)),
        };
        let hello = accepted.client_hello();
        // RFC 8737: the CA offers `acme-tls/1` and nothing else.
        let only_acme = hello.alpn().is_some_and(|offered| {
            let offered: Vec<&[u8]> = offered.collect();
            offered == [ACME_TLS_ALPN]
        });
        let config = match (only_acme, hello.server_name()) {
            (true, Some(name)) => challenges
                .config_for(name)
                .map(|c| (c, name.to_ascii_lowercase())),
            _ => None,
        };
        return match config {
            Some((config, name)) => match accepted.into_connection(config) {
                Ok(conn) => Ok(Hello::Challenge(Box::new(conn), name)),
                Err((e, _)) => Err(io::Error::other(e)),
            },
            // A client that is not validating, or a name we are not validating (RFC 8737
            // lets the CA see a normal handshake failure then): the usual path.
            None => {
                let sni = hello.server_name().map(str::to_ascii_lowercase);
                Ok(Hello::Pass(seen, sni))
            }
        };
    }
}

/// Completes the challenge handshake and closes it politely.
async fn finish(conn: &mut ServerConnection, stream: &mut L4Stream) -> io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        flush_tls(conn, stream).await?;
        if !conn.is_handshaking() {
            break;
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let mut chunk = &buf[..n];
        while !chunk.is_empty() {
            conn.read_tls(&mut chunk)?;
            if let Err(e) = conn.process_new_packets() {
                // Send the alert rustls queued before giving up.
                let _ = flush_tls(conn, stream).await;
                return Err(io::Error::other(e));
            }
        }
    }
    conn.send_close_notify();
    flush_tls(conn, stream).await
}

async fn flush_tls(conn: &mut ServerConnection, stream: &mut L4Stream) -> io::Result<()> {
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out)?;
    }
    if !out.is_empty() {
        stream.write_all(&out).await?;
    }
    stream.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_certificate_carries_the_acme_identifier() {
        let digest = [7u8; 32];
        let config = challenge_config("a.example", &digest).unwrap();
        assert_eq!(config.alpn_protocols, vec![ACME_TLS_ALPN.to_vec()]);
        let challenges = AlpnChallenges::default();
        assert!(challenges.is_idle());
        challenges.insert("A.example", &digest).unwrap();
        challenges.insert("a.example", &digest).unwrap();
        assert!(!challenges.is_idle());
        assert!(challenges.config_for("a.EXAMPLE").is_some());
        challenges.remove("a.example");
        assert!(challenges.is_idle(), "one name counted once");
    }
}
