//! TLS: the SNI certificate store the HTTPS listeners resolve from (`store`), where
//! certificates come from (`internal`: a local CA; `acme`: RFC 8555 orders; files), and
//! the background service that keeps them current (`manager`), the TLS-ALPN-01
//! answers (`alpn`), the DNS-01 records (`dns01`) and certificates for names not in the
//! file, issued at their first handshake (`on_demand`).

pub mod acme;
pub mod alpn;
pub mod dns01;
pub mod hello;
pub mod internal;
pub mod manager;
pub mod on_demand;
pub mod renew;
pub mod shared;
pub mod sites;
pub mod store;

use std::sync::{Arc, Mutex};

use internal::LocalCa;
use store::{CertStore, Challenges};

/// The config in force now (a reload replaces it), for the background services and
/// the pre-TLS hook.
pub type ConfigSource = Box<dyn Fn() -> Arc<crate::config::Config> + Send + Sync>;

/// Shared by the HTTPS listeners (certificates), the proxy (HTTP-01 answers) and the
/// manager (issuance).
#[derive(Default)]
pub struct TlsState {
    pub store: Arc<CertStore>,
    /// HTTP-01 tokens, answered by the plain listener.
    pub challenges: Challenges,
    /// TLS-ALPN-01 certificates, answered by the HTTPS listeners' pre-TLS hook.
    pub alpn: Arc<alpn::AlpnChallenges>,
    /// Names not in the file, issued on demand (`on_demand.rs`).
    pub on_demand: on_demand::OnDemandState,
    /// The ACME orders of each site (by its first name), for the status page.
    pub orders: dashmap::DashMap<String, renew::OrderStatus>,
    local_ca: Mutex<Option<Arc<LocalCa>>>,
}
