//! Each client connection, before pingora's HTTP app sees it: the per-client connection
//! cap and the request-head deadline. Pingora times out each read on its own, so a
//! client that trickles a header byte every few seconds (slowloris) would hold its
//! connection for as long as it likes; here the whole head has a deadline.
//!
//! Pingora calls `process_new` once per connection (after the TLS handshake); HTTP/2
//! stays inside pingora's own loop, HTTP/1 runs ours (`http1.rs`), so wrapping it sees
//! each connection's whole life. The request path tells the stream when a head was parsed and when the request
//! ended (`proxy/mod.rs`, through [`ClientStream::of`]). A head pingora refuses on its
//! own gets the gateway's JSON 400 and access line instead of a bare 400 (`refuse.rs`).

mod coalesce;
mod http1;
mod passthrough;
mod refuse;
mod slots;
mod stream;

use std::sync::Arc;

use async_trait::async_trait;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::{Stream, ALPN};
use pingora_core::server::ShutdownWatch;
use pingora_proxy::HttpProxy;

use crate::metrics::Metrics;
use crate::proxy::ctx::Lifecycle;
use crate::proxy::Gateway;
use crate::state::SharedState;
pub use refuse::Refuser;
pub use slots::ClientSlots;
pub use stream::ClientStream;

pub struct EdgeApp {
    proxy: Arc<HttpProxy<Gateway>>,
    state: SharedState,
    slots: Arc<ClientSlots>,
    metrics: Arc<Metrics>,
    refuser: Arc<Refuser>,
}

impl EdgeApp {
    pub fn new(
        proxy: HttpProxy<Gateway>,
        state: SharedState,
        metrics: Arc<Metrics>,
        lifecycle: Arc<Lifecycle>,
    ) -> Self {
        EdgeApp {
            proxy: Arc::new(proxy),
            refuser: Arc::new(Refuser::new(state.clone(), lifecycle, Arc::clone(&metrics))),
            state,
            slots: Arc::default(),
            metrics,
        }
    }
}

impl EdgeApp {
    /// One connection, from its first byte to its close.
    async fn serve(self: Arc<Self>, stream: Stream, shutdown: ShutdownWatch) {
        let limits = self.state.load().config.limits;
        let slot = match (limits.max_connections_per_client, stream::peer_ip(&stream)) {
            (0, _) | (_, None) => None,
            (max, Some(ip)) => Some(self.slots.take(ip, max)),
        };
        let h2 = matches!(stream.selected_alpn_proto(), Some(ALPN::H2));
        if h2 && slot.as_ref().is_some_and(|s| s.over()) {
            // An HTTP/1 connection over the cap gets a 429 on its first request; an
            // HTTP/2 one carries many requests and is simply not taken.
            self.metrics.connections_over_cap.inc();
            return;
        }
        if h2 {
            let stream = ClientStream::new(stream, None, slot, &self.metrics.header_timeouts, None);
            // Pingora's HTTP/2 server never hands a connection back for reuse.
            let _ = self.proxy.process_new(Box::new(stream), &shutdown).await;
            return;
        }
        let stream = ClientStream::new(
            stream,
            Some(limits.header_timeout),
            slot,
            &self.metrics.header_timeouts,
            Some(Arc::clone(&self.refuser)),
        );
        http1::serve(
            &self.proxy,
            Box::new(stream),
            limits.keepalive_timeout,
            &shutdown,
        )
        .await;
    }
}

#[async_trait]
impl ServerApp for EdgeApp {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // The task pingora spawns per connection is sized for its largest state, the
        // TLS handshake: 8.8 KB held for the connection's whole life, most of an idle
        // connection's memory (bench/idle-heap.sh). The connection goes on in a task
        // of its own size instead, and pingora's task ends here.
        tokio::spawn(Arc::clone(self).serve(stream, shutdown.clone()));
        None
    }

    async fn cleanup(&self) {
        self.proxy.cleanup().await
    }
}
