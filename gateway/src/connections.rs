//! Connection counts for `/metrics`: accepted connections (counted by a pingora
//! connection filter, one atomic add per connection) and open ones (read from
//! `/proc/net/tcp{,6}` at scrape time: server-side sockets in ESTABLISHED state on a
//! listener's port), so neither costs the request path anything more.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use pingora_core::listeners::ConnectionFilter;

/// Counts every accepted TCP connection and lets it through.
#[derive(Debug, Default)]
pub struct AcceptCounter {
    accepted: AtomicU64,
}

impl AcceptCounter {
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl ConnectionFilter for AcceptCounter {
    async fn should_accept(&self, _addr: Option<&SocketAddr>) -> bool {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        true
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
