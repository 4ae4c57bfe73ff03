//! Client connections counted: accepted ones (by a pingora connection filter, one atomic
//! add per connection), the ones being served now (for `[limits] max_connections`: the
//! filter closes a new connection at once, before any TLS, while that many are open),
//! and, for `/metrics`, established sockets per listener (read from `/proc/net/tcp{,6}`
//! at scrape time), so none of it costs the request path anything more.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use pingora_core::listeners::ConnectionFilter;

/// Counts every accepted TCP connection, and closes it at once while `max` are open.
#[derive(Debug, Default)]
pub struct AcceptCounter {
    accepted: AtomicU64,
    /// Connections being served now (taken by `enter`, given back on drop).
    open: AtomicUsize,
    /// `[limits] max_connections` as last seen (0: no cap).
    max: AtomicUsize,
    /// Connections closed at accept because `max` were open.
    refused: AtomicU64,
    /// Whether the cap is being hit now (one log line per change).
    full: AtomicBool,
}

impl AcceptCounter {
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// One connection served from now until the guard drops; `max` is the cap in force.
    pub fn enter(self: &Arc<Self>, max: usize) -> OpenGuard {
        self.max.store(max, Ordering::Relaxed);
        self.open.fetch_add(1, Ordering::AcqRel);
        OpenGuard(Arc::clone(self))
    }
}

/// A connection being served; dropping it gives its place back.
pub struct OpenGuard(Arc<AcceptCounter>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[async_trait]
impl ConnectionFilter for AcceptCounter {
    async fn should_accept(&self, _addr: Option<&SocketAddr>) -> bool {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        let max = self.max.load(Ordering::Relaxed);
        let full = max != 0 && self.open.load(Ordering::Acquire) >= max;
        if full != self.full.load(Ordering::Relaxed)
            && self.full.swap(full, Ordering::AcqRel) != full
        {
            if full {
                tracing::warn!(
                    event = "connection_limit_reached",
                    max_connections = max,
                    "new connections are closed at accept until some end"
                );
            } else {
                tracing::info!(event = "connection_limit_cleared", max_connections = max);
            }
        }
        if full {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        !full
    }
}

/// Shares one counter between the proxy service and the metrics.
pub fn shared() -> Arc<AcceptCounter> {
    Arc::new(AcceptCounter::default())
}

/// Established server-side connections per local port, from the kernel's tables.
pub fn open_by_port(ports: &[u16]) -> HashMap<u16, u64> {
    let mut out: HashMap<u16, u64> = ports.iter().map(|p| (*p, 0)).collect();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let mut fields = line.split_whitespace();
            let (Some(_), Some(local), Some(_remote), Some(state)) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            // State 01 is ESTABLISHED; the local address ends in ":PORT" (hex).
            if state != "01" {
                continue;
            }
            let Some(port) = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok())
            else {
                continue;
            };
            if let Some(n) = out.get_mut(&port) {
                *n += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_established_sockets_on_a_listening_port() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let _c1 = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let _c2 = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let _s1 = l.accept().unwrap();
        let _s2 = l.accept().unwrap();
        assert_eq!(
            open_by_port(&[port])[&port],
            2,
            "server-side sockets only, not the clients'"
        );
    }
}
