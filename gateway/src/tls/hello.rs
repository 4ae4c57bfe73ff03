//! The HTTPS listeners' pre-TLS hook: reads the ClientHello before pingora's handshake
//! when something needs it there — a CA validating TLS-ALPN-01 (`alpn.rs`), or a name
//! the file does not list that may get a certificate on demand (`on_demand.rs`) — and
//! gives every byte back for the normal handshake. With no order pending and no site
//! issuing on demand it reads nothing: one atomic load and one config load per
//! connection.

use std::sync::Arc;

use async_trait::async_trait;
use pingora_core::listeners::PreTlsProcess;
use pingora_core::protocols::l4::stream::Stream as L4Stream;

use super::alpn::{self, Hello, HELLO_TIMEOUT};
use super::{ConfigSource, TlsState};
use crate::metrics::Metrics;

pub struct HelloHook {
    pub tls: Arc<TlsState>,
    pub metrics: Arc<Metrics>,
    /// The config in force (its on-demand site, if any, and the state dir).
    pub config: ConfigSource,
}

#[async_trait]
impl PreTlsProcess for HelloHook {
    async fn process(&self, stream: &mut L4Stream) -> pingora_core::Result<()> {
        let config = (self.config)();
        let policy = config.on_demand_site().map(|(_, _, p)| p);
        if self.tls.alpn.is_idle() && policy.is_none() {
            return Ok(());
        }
        let hello = tokio::time::timeout(HELLO_TIMEOUT, alpn::read_hello(&self.tls.alpn, stream))
            .await
            .map_err(|_| alpn::drop_connection("no ClientHello in time"))?
            .map_err(|e| alpn::drop_connection(&e.to_string()))?;
        let (seen, sni) = match hello {
            Hello::Challenge(conn, name) => return Err(alpn::answer(conn, name, stream).await),
            Hello::Pass(seen, sni) => (seen, sni),
        };
        if let (Some(policy), Some(name)) = (policy, sni) {
            if !self.tls.store.covers(&name) {
                let state_dir = &config.tls.state_dir;
                let ready = self
                    .tls
                    .on_demand
                    .ensure(&self.tls, &self.metrics, policy, state_dir, &name)
                    .await;
                if let Err(why) = ready {
                    tracing::info!(event = "on_demand_handshake_refused", name = %name, why = %why, "TLS handshake refused");
                    return Err(alpn::drop_connection(&why));
                }
            }
        }
        stream.rewind(&seen);
        Ok(())
    }
}
