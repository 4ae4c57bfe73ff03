//! The running configuration as one immutable `Snapshot` behind an `ArcSwap`.
//!
//! Each request pins the snapshot current when it starts (one atomic load) and keeps
//! it to the end, so a swap never changes a request half-way. Building a snapshot
//! reuses the pools of the previous one whose settings did not change, keeping their
//! health state; new pools get a decisive first health check before they serve.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::compress::CompiledCompression;
use crate::config::{Config, ConfigError, ConfigErrors};
use crate::policy::cors::CompiledCors;
use crate::policy::CompiledPolicy;
use crate::ratelimit::Limiter;
use crate::routing::Router;
use crate::tls::sites::SiteTable;
use crate::traffic::RouteTraffic;
use crate::upstream::{health, Pool};

pub struct Snapshot {
    pub config: Arc<Config>,
    pub router: Router,
    /// Index-aligned with `config.pools`; `Route::pool` indexes here.
    pub pools: Vec<Arc<Pool>>,
    /// Index-aligned with `config.rate_limits`; reused across reloads when unchanged,
    /// so clients keep their buckets.
    pub limiters: Vec<Arc<Limiter>>,
    /// Index-aligned with `router.routes()`.
    pub policies: Vec<CompiledPolicy>,
    /// For responses that match no route.
    pub fallback: CompiledPolicy,
    /// Host -> site, for redirects and HSTS.
    pub sites: SiteTable,
    /// Index-aligned with `router.routes()`: the status page's traffic ring, kept
    /// across reloads for a route that keeps its name.
    pub traffic: Vec<Arc<RouteTraffic>>,
    /// Requests that matched no route.
    pub unrouted: Arc<RouteTraffic>,
}

pub type SharedState = Arc<ArcSwap<Snapshot>>;

impl Snapshot {
    pub async fn build(config: Config, prev: Option<&Snapshot>) -> Result<Snapshot, ConfigErrors> {
        let mut pools = Vec::with_capacity(config.pools.len());
        let mut errors = Vec::new();
        for p in &config.pools {
            let reused = prev
                .and_then(|s| s.pools.iter().find(|old| old.config == *p))
                .cloned();
            let pool = match reused {
                Some(pool) => pool,
                None => match Pool::build(p).await {
                    Ok(pool) => {
                        health::first_pass(&pool).await;
                        pool
                    }
                    Err(message) => {
                        errors.push(ConfigError {
                            file: config.source.clone(),
                            position: None,
                            key: format!("pools.{}.replicas", p.name),
                            message,
                        });
                        continue;
                    }
                },
            };
            pools.push(pool);
        }
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        let limiters: Vec<Arc<Limiter>> = config
            .rate_limits
            .iter()
            .map(|l| {
                let reused = prev
                    .and_then(|s| s.limiters.iter().find(|old| old.config == *l))
                    .cloned();
                reused.unwrap_or_else(|| Arc::new(Limiter::new(l.clone())))
            })
            .collect();
        let cors: Vec<Arc<CompiledCors>> = config
            .cors
            .iter()
            .map(|c| Arc::new(CompiledCors::compile(c)))
            .collect();
        let compression: Vec<Arc<CompiledCompression>> = config
            .compression
            .iter()
            .map(|c| Arc::new(CompiledCompression::compile(c)))
            .collect();
        let router = Router::new(config.routes.clone());
        let policies = router
            .routes()
            .iter()
            .map(|r| CompiledPolicy::compile(&r.policy, &limiters, &cors, &compression))
            .collect();
        let fallback = CompiledPolicy::fallback(&config);
        let sites = SiteTable::new(&config);
        let traffic = router
            .routes()
            .iter()
            .map(|r| {
                prev.and_then(|s| {
                    let i = s.router.routes().iter().position(|o| o.name == r.name)?;
                    s.traffic.get(i).cloned()
                })
                .unwrap_or_default()
            })
            .collect();
        let unrouted = prev.map(|s| Arc::clone(&s.unrouted)).unwrap_or_default();
        Ok(Snapshot {
            config: Arc::new(config),
            router,
            pools,
            limiters,
            policies,
            fallback,
            sites,
            traffic,
            unrouted,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(rate: &str) -> Config {
        let src = format!(
            "[[listeners]]\naddress = \"127.0.0.1:1\"\n[pools.p]\nreplicas = [\"127.0.0.1:9\"]\n\
             [rate_limits.l]\nrate = \"{rate}\"\n[[routes]]\npool = \"p\"\nrate_limits = [\"l\"]\n"
        );
        crate::config::load_str(Path::new("t.toml"), &src, &|_| None).unwrap()
    }

    #[tokio::test]
    async fn unchanged_pools_and_limits_survive_a_rebuild() {
        let first = Snapshot::build(config("5 per 1m"), None).await.unwrap();
        let same = Snapshot::build(config("5 per 1m"), Some(&first))
            .await
            .unwrap();
        assert!(
            Arc::ptr_eq(&first.limiters[0], &same.limiters[0]),
            "buckets kept"
        );
        assert!(
            Arc::ptr_eq(&first.pools[0], &same.pools[0]),
            "health state kept"
        );
        assert!(Arc::ptr_eq(
            &same.policies[0].limiters[0],
            &same.limiters[0]
        ));
        let changed = Snapshot::build(config("6 per 1m"), Some(&same))
            .await
            .unwrap();
        assert!(
            !Arc::ptr_eq(&same.limiters[0], &changed.limiters[0]),
            "a changed limit starts fresh"
        );
    }
}
