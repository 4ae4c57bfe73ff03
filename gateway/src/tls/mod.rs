//! TLS: the SNI certificate store the HTTPS listeners resolve from (`store`), where
//! certificates come from (`internal`: a local CA; `acme`: RFC 8555 orders; files), and
//! the background service that keeps them current (`manager`).

pub mod acme;
pub mod internal;
pub mod manager;
pub mod sites;
pub mod store;

use std::sync::{Arc, Mutex};

use internal::LocalCa;
use store::{CertStore, Challenges};

/// Shared by the HTTPS listeners (certificates), the proxy (HTTP-01 answers) and the
/// manager (issuance).
#[derive(Default)]
pub struct TlsState {
    pub store: Arc<CertStore>,
    pub challenges: Challenges,
    local_ca: Mutex<Option<Arc<LocalCa>>>,
}
