//! Replica discovery by DNS: `host:port` entries are resolved at start and again every
//! `resolve_interval`, so a Compose service scaled to N replicas (one name, N
//! addresses) is followed as it changes, instead of nginx's resolve-once behaviour.
//! When a lookup fails, the last known replicas are kept.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;

use async_trait::async_trait;
use pingora_core::{Error, ErrorType, Result};
use pingora_load_balancing::discovery::ServiceDiscovery;
use pingora_load_balancing::Backend;

pub struct DnsDiscovery {
    /// `host:port` as written in the config.
    pub entries: Vec<String>,
}

/// Resolves every entry; all must resolve (a partial answer would silently drop
/// replicas), and the union of their addresses is the pool.
pub async fn resolve_all(entries: &[String]) -> std::result::Result<Vec<SocketAddr>, String> {
    let mut out = Vec::new();
    for e in entries {
        let found: Vec<SocketAddr> = tokio::net::lookup_host(e.as_str())
            .await
            .map_err(|err| format!("cannot resolve {e:?}: {err}"))?
            .collect();
        if found.is_empty() {
            return Err(format!("cannot resolve {e:?}: no addresses"));
        }
        out.extend(found);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

#[async_trait]
impl ServiceDiscovery for DnsDiscovery {
    async fn discover(&self) -> Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        let addrs = resolve_all(&self.entries)
            .await
            .map_err(|e| Error::explain(ErrorType::ConnectNoRoute, e))?;
        let mut set = BTreeSet::new();
        for a in addrs {
            set.insert(
                Backend::new(&a.to_string())
                    .map_err(|e| Error::because(ErrorType::InternalError, "replica address", e))?,
            );
        }
        Ok((set, HashMap::new()))
    }
}
