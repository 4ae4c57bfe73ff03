//! The running configuration as one immutable `Snapshot` behind an `ArcSwap`.
//!
//! Each request pins the snapshot current when it starts (one atomic load) and keeps
//! it to the end, so a swap never changes a request half-way. Building a snapshot
//! reuses the pools of the previous one whose settings did not change, keeping their
//! health state; new pools get a decisive first health check before they serve.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::{Config, ConfigError, ConfigErrors};
use crate::routing::Router;
use crate::upstream::{health, Pool};

pub struct Snapshot {
    pub config: Arc<Config>,
    pub router: Router,
    /// Index-aligned with `config.pools`; `Route::pool` indexes here.
    pub pools: Vec<Arc<Pool>>,
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
        let router = Router::new(config.routes.clone());
        Ok(Snapshot {
            config: Arc::new(config),
            router,
            pools,
        })
    }
}
