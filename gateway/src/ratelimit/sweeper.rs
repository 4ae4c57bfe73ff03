//! Background service that drops idle rate-limit entries, so the tables of all limits
//! shrink back after a burst of clients instead of growing for the life of the process.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;

use super::Limiter;

type Source = Box<dyn Fn() -> Vec<Arc<Limiter>> + Send + Sync>;

pub struct Sweeper {
    /// The limiters of the current snapshot (a reload changes the set).
    limiters: Source,
}

impl Sweeper {
    pub fn new(limiters: impl Fn() -> Vec<Arc<Limiter>> + Send + Sync + 'static) -> Self {
        Sweeper {
            limiters: Box::new(limiters),
        }
    }
}

#[async_trait]
impl BackgroundService for Sweeper {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut last: Vec<(usize, Instant)> = Vec::new();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                changed = shutdown.changed() => if changed.is_err() || *shutdown.borrow() { return },
            }
            let limiters = (self.limiters)();
            last.retain(|(id, _)| limiters.iter().any(|l| Arc::as_ptr(l) as usize == *id));
            for l in &limiters {
                let id = Arc::as_ptr(l) as usize;
                let due = match last.iter_mut().find(|(i, _)| *i == id) {
                    Some((_, at)) if at.elapsed() < l.sweep_interval() => false,
                    Some((_, at)) => {
                        *at = Instant::now();
                        true
                    }
                    None => {
                        last.push((id, Instant::now()));
                        false
                    }
                };
                if due {
                    let removed = l.sweep(l.now());
                    if removed > 0 {
                        tracing::debug!(event = "ratelimit_swept", limit = %l.config.name, removed, tracked = l.tracked());
                    }
                }
            }
        }
    }
}
