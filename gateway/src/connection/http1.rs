//! The HTTP/1 connection loop, in place of the one pingora's `ServerApp` impl runs for
//! its HTTP apps: the same steps (one pingora session per request, keep-alive settings
//! carried from one to the next), except that before each request only the connection
//! is held until the client's first byte arrives. Pingora builds its session, its parse
//! buffer and its request futures before reading, which made every idle connection
//! (fresh or kept alive) cost tens of KiB (docs/performance.md); now an idle one costs
//! its socket, the wrapped stream and this loop.

use std::sync::Arc;
use std::time::Duration;

use pingora_core::apps::{HttpPersistentSettings, HttpServerApp};
use pingora_core::protocols::http::ServerSession;
use pingora_core::server::ShutdownWatch;
use pingora_proxy::{HttpProxy, ProxyHttp};

use super::ClientStream;

/// How long a connection accepted just before a shutdown may take to send its first
/// request (seen failing one request in two thousand during a zero-downtime upgrade).
const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(1);

/// Serves one HTTP/1 connection until the client or the gateway ends it. An idle
/// keep-alive connection is closed after `keepalive` (zero: no keep-alive, applied in
/// `request_filter`). Pingora alone would keep an idle HTTP/1.1 connection for as long
/// as the client likes: its session takes the keep-alive setting from the request
/// (`respect_keepalive`), which for HTTP/1.1 means no timeout at all.
pub async fn serve<SV>(
    proxy: &Arc<HttpProxy<SV>>,
    mut client: Box<ClientStream>,
    keepalive: Duration,
    shutdown: &ShutdownWatch,
) where
    SV: ProxyHttp + Send + Sync + 'static,
    SV::CTX: Send + Sync,
{
    // Pingora counts keep-alive in whole seconds; a sub-second setting rounds up.
    let keepalive_secs = keepalive.as_secs() + u64::from(keepalive.subsec_nanos() > 0);
    let mut shutdown_changed = shutdown.clone();
    let mut carried: Option<HttpPersistentSettings> = None;
    let mut first = true;
    loop {
        if !first && *shutdown.borrow() {
            // Going down: a kept-alive connection is not used again (as pingora does).
            return;
        }
        // The first request's wait is bounded by the head deadline (`ClientStream`);
        // a kept-alive connection's by the keep-alive timeout.
        let arrived = {
            let wait = async {
                if first {
                    client.next_request_bytes().await
                } else {
                    tokio::time::timeout(keepalive, client.next_request_bytes())
                        .await
                        .unwrap_or(Ok(None))
                }
            };
            tokio::pin!(wait);
            tokio::select! {
                biased;
                r = &mut wait => r.ok().flatten(),
                _ = shutdown_changed.changed() => {
                    if first {
                        // Accepted just before the shutdown: its first request is most
                        // likely on the way (a new TLS connection sends it right after
                        // the handshake). Closing now would fail a request that reached
                        // us in time; wait a moment for it, then close.
                        tokio::time::timeout(FIRST_REQUEST_GRACE, &mut wait)
                            .await
                            .ok()
                            .and_then(|r| r.ok().flatten())
                    } else {
                        None
                    }
                }
            }
        };
        let Some(start) = arrived else {
            return;
        };
        let mut session = ServerSession::new_http1(client);
        // Pingora's parser starts from what was read (as it would from bytes pipelined
        // behind a previous request), so the wait costs no extra read.
        session.set_pipelined_prefix(start);
        match carried.take() {
            Some(settings) => settings.apply_to_session(&mut session),
            None if first => {
                let keep = keepalive_secs > 0 && !*shutdown.borrow();
                session.set_keepalive(keep.then_some(keepalive_secs));
                session.set_keepalive_reuses_remaining(
                    proxy
                        .server_options()
                        .and_then(|o| o.keepalive_request_limit),
                );
            }
            None => {}
        }
        first = false;
        let Some(reused) = proxy.process_new_http(session, shutdown).await else {
            return;
        };
        let (stream, settings) = reused.consume();
        carried = settings;
        // Pingora hands back the stream it was given.
        match stream.into_any().downcast::<ClientStream>() {
            Ok(c) => client = c,
            Err(_) => return,
        }
    }
}
