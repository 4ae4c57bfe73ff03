//! The store's background service: connects (on its own runtime, which lives as long
//! as the process), probes the server (PING every second while up; with backoff from
//! 250 ms to 5 s while down) and marks the store up or down, and listens for the
//! events other gateways publish, reconnecting with backoff and asking for a resync
//! after every (re)subscription, since events sent meanwhile are lost.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use redis::aio::ConnectionManager;

use super::{Event, Store};

const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
const PROBE_EVERY: Duration = Duration::from_secs(1);

pub struct StoreService {
    store: Arc<Store>,
}

impl StoreService {
    pub fn new(store: Arc<Store>) -> Self {
        StoreService { store }
    }
}

/// Connects, and answers whether the server is reachable now (for `required`).
pub async fn connect(store: &Store) -> Result<(), String> {
    let conn = match store.conn.load_full() {
        Some(c) => c,
        None => {
            let conn = ConnectionManager::new_lazy_with_config(
                store.client.clone(),
                super::manager_config(&store.cfg),
            )
            .map_err(|e| e.to_string())?;
            let conn = Arc::new(conn);
            store.conn.store(Some(Arc::clone(&conn)));
            conn
        }
    };
    ping(&conn, store.cfg.connect_timeout).await?;
    store.mark_up();
    Ok(())
}

/// Whether the server answers a PING now, on a connection of its own (for `required`
/// at start-up, before the service runs).
pub async fn reachable(store: &Store) -> Result<(), String> {
    let within = store.cfg.connect_timeout;
    let attempt = async {
        let mut conn = store
            .client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| e.to_string())?;
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map_err(|e| e.to_string())
    };
    let result = match tokio::time::timeout(within, attempt).await {
        Ok(r) => r.map(drop),
        Err(_) => Err(format!("no answer within {within:?}")),
    };
    match &result {
        // Requests may count in the store from the first one on (the request path makes
        // its own connection; background calls wait for the service's).
        Ok(()) => store.mark_up(),
        Err(e) => store.failed("connect", e, true),
    }
    result
}

async fn ping(conn: &ConnectionManager, within: Duration) -> Result<(), String> {
    let mut conn = conn.clone();
    match tokio::time::timeout(within, redis::cmd("PING").query_async::<String>(&mut conn)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer to PING within {within:?}")),
    }
}

#[async_trait]
impl BackgroundService for StoreService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let events = tokio::spawn(listen(Arc::clone(&self.store)));
        let mut backoff = BACKOFF_MIN;
        loop {
            let wait = match connect(&self.store).await {
                Ok(()) => {
                    backoff = BACKOFF_MIN;
                    PROBE_EVERY
                }
                Err(e) => {
                    self.store.failed("ping", &e, true);
                    let wait = backoff.mul_f64(rand::random_range(0.8..1.2));
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    wait
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                changed = shutdown.changed() => if changed.is_err() || *shutdown.borrow() { break },
            }
        }
        events.abort();
    }
}

/// Forwards the events channel's messages to this gateway's subscribers.
async fn listen(store: Arc<Store>) {
    let channel = store.key("events");
    let mut backoff = BACKOFF_MIN;
    loop {
        let subscribed = tokio::time::timeout(store.cfg.connect_timeout, async {
            let mut pubsub = store.client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        })
        .await;
        if let Ok(Ok(mut pubsub)) = subscribed {
            backoff = BACKOFF_MIN;
            // Whatever was published while we were not listening is in the store.
            let _ = store.events.send(Event::Resync);
            let mut messages = pubsub.on_message();
            while let Some(msg) = messages.next().await {
                match Event::parse(msg.get_payload_bytes()) {
                    Some(e) => {
                        let _ = store.events.send(e);
                    }
                    None => tracing::warn!(
                        event = "store_event_unreadable",
                        "an event on the store's channel could not be read (another version?)"
                    ),
                }
            }
        }
        tokio::time::sleep(backoff.mul_f64(rand::random_range(0.8..1.2))).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}
