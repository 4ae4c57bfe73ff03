//! Each client connection, below the HTTP proxy and knowing nothing of it: the
//! per-client connection cap, the request-head deadline, bare-LF detection, write
//! coalescing, and our HTTP/1 connection loop. Pingora times out each read on its own,
//! so a client that trickles a header byte every few seconds (slowloris) would hold its
//! connection for as long as it likes; here the whole head has a deadline.
//!
//! Pingora calls `process_new` once per connection (after the TLS handshake); HTTP/2
//! stays inside pingora's own loop, HTTP/1 runs ours (`http1.rs`), so wrapping it sees
//! each connection's whole life. What the HTTP layer needs to know of its connection
//! (the head is in, the request is over, the connection is over its cap, the head had
//! a bare LF) it asks through a [`ClientHandle`]. A head pingora refuses on its own is
//! answered through a [`RefuseHead`] the HTTP layer provides (`refuse.rs`).
//!
//! Generic over the `ProxyHttp` it serves, so nothing here names the gateway's proxy.

mod coalesce;
mod head_scan;
mod http1;
mod passthrough;
mod refuse;
mod slots;
mod stream;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::{Stream, ALPN};
use pingora_core::server::ShutdownWatch;
use pingora_proxy::{HttpProxy, ProxyHttp};
use prometheus::IntCounter;

use crate::config::Limits;
use crate::connections::AcceptCounter;
pub use refuse::{RefuseHead, RefusedHead};
pub use slots::ClientSlots;
pub use stream::{Activity, ClientHandle, ClientStream};

/// The connection layer's counters (they live in the gateway's metrics registry).
#[derive(Clone)]
pub struct Counters {
    /// Connections closed because their request head missed `header_timeout`.
    pub header_timeouts: IntCounter,
    /// Connections beyond `max_connections_per_client`.
    pub over_cap: IntCounter,
    /// HTTP/2 connections closed (GOAWAY) after `keepalive_timeout` with nothing moving.
    pub h2_idle_closed: IntCounter,
}

/// After an idle HTTP/2 connection's GOAWAY, how long it may stay silent before it is
/// closed anyway (a well-behaved client acknowledges the GOAWAY's PING at once).
const AFTER_GOAWAY: Duration = Duration::from_secs(5);

/// The limits in force when a connection starts (a reload changes them for new ones).
pub type LimitsSource = Arc<dyn Fn() -> Limits + Send + Sync>;

pub struct EdgeApp<SV: ProxyHttp> {
    proxy: Arc<HttpProxy<SV>>,
    limits: LimitsSource,
    slots: Arc<ClientSlots>,
    counters: Counters,
    refuser: Arc<dyn RefuseHead>,
    /// Connections served now, for `max_connections` (the accept filter reads it).
    open: Arc<AcceptCounter>,
}

impl<SV> EdgeApp<SV>
where
    SV: ProxyHttp + Send + Sync + 'static,
    SV::CTX: Send + Sync,
{
    pub fn new(
        proxy: HttpProxy<SV>,
        limits: LimitsSource,
        counters: Counters,
        refuser: Arc<dyn RefuseHead>,
        open: Arc<AcceptCounter>,
    ) -> Self {
        EdgeApp {
            proxy: Arc::new(proxy),
            limits,
            slots: Arc::default(),
            counters,
            refuser,
            open,
        }
    }

    /// One connection, from its first byte to its close.
    async fn serve(self: Arc<Self>, stream: Stream, shutdown: ShutdownWatch) {
        let limits = (self.limits)();
        let _open = self.open.enter(limits.max_connections);
        let slot = match (limits.max_connections_per_client, stream::peer_ip(&stream)) {
            (0, _) | (_, None) => None,
            (max, Some(ip)) => Some(self.slots.take(ip, max)),
        };
        let h2 = matches!(stream.selected_alpn_proto(), Some(ALPN::H2));
        if h2 && slot.as_ref().is_some_and(|s| s.over()) {
            // An HTTP/1 connection over the cap gets a 429 on its first request; an
            // HTTP/2 one carries many requests and is simply not taken.
            self.counters.over_cap.inc();
            return;
        }
        if h2 {
            let activity = Activity::new();
            let stream =
                ClientStream::new(stream, None, slot, &self.counters.header_timeouts, None)
                    .with_activity(Arc::clone(&activity));
            self.serve_h2(stream, activity, limits.keepalive_timeout, shutdown)
                .await;
            return;
        }
        let stream = ClientStream::new(
            stream,
            Some(limits.header_timeout),
            slot,
            &self.counters.header_timeouts,
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

impl<SV> EdgeApp<SV>
where
    SV: ProxyHttp + Send + Sync + 'static,
    SV::CTX: Send + Sync,
{
    /// Pingora's HTTP/2 loop for one connection, under a shutdown signal of its own:
    /// the process's, or this connection's idle timeout. Pingora ends an HTTP/2
    /// connection on that signal with a GOAWAY, finishes the streams in flight, and
    /// closes it; without this an idle HTTP/2 connection (even one that never sent a
    /// request) was held for as long as the client liked.
    async fn serve_h2(
        &self,
        stream: ClientStream,
        activity: Arc<Activity>,
        keepalive: Duration,
        mut shutdown: ShutdownWatch,
    ) {
        // HTTP/2 cannot turn keep-alive off: `keepalive_timeout = "0s"` gets the default.
        let idle_limit = if keepalive.is_zero() {
            crate::config::defaults::KEEPALIVE_TIMEOUT
        } else {
            keepalive
        };
        let (goaway, own) = tokio::sync::watch::channel(false);
        let served = self.proxy.process_new(Box::new(stream), &own);
        tokio::pin!(served);
        let mut asked = false;
        loop {
            // Before the GOAWAY: the idle limit. After it: a client that answers nothing
            // (h2's graceful close waits for the client's PING acknowledgement) is not
            // waited for longer than AFTER_GOAWAY with nothing moving.
            let limit = if asked { AFTER_GOAWAY } else { idle_limit };
            let wait = limit.saturating_sub(activity.idle_for());
            tokio::select! {
                _ = &mut served => return,
                changed = shutdown.changed(), if !asked => {
                    if changed.is_err() || *shutdown.borrow() {
                        asked = true;
                        let _ = goaway.send(true);
                    }
                }
                _ = tokio::time::sleep(wait) => {
                    if activity.idle_for() < limit {
                        continue;
                    }
                    if asked {
                        // Dropping pingora's loop closes the connection.
                        return;
                    }
                    asked = true;
                    self.counters.h2_idle_closed.inc();
                    let _ = goaway.send(true);
                }
            }
        }
    }
}

#[async_trait]
impl<SV> ServerApp for EdgeApp<SV>
where
    SV: ProxyHttp + Send + Sync + 'static,
    SV::CTX: Send + Sync,
{
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
