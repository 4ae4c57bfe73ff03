//! The shared store: a Redis server (or anything that speaks its protocol, such as
//! Valkey) that several gateways use to count rate limits together (`limit.rs`) and to
//! share their ACME account, certificates, order locks and challenges (`certs.rs`).
//!
//! Every call carries a time budget. A call that cannot reach the server, or runs over
//! its budget, marks the store down; from then on nothing waits for it: each feature
//! takes its fallback at once, until the background probe (`service.rs`) reaches the
//! server again. One log line per change of state, never one per request.

pub mod certs;
pub mod limit;
pub mod seal;
mod service;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use prometheus::{HistogramVec, IntCounterVec, IntGauge};
use redis::aio::ConnectionManager;
use redis::{IntoConnectionInfo, RedisError, RedisResult};
use tokio::sync::broadcast;

use crate::config;
pub use certs::Event;
pub use service::{reachable, StoreService};

/// Why a store call gave no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("the store is down")]
    Down,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Redis(String),
    /// The server answered, with data this gateway cannot use (another version's, or
    /// garbage): a problem with that key only.
    #[error("unusable data under {key}: {why}")]
    Data { key: String, why: String },
}

/// The store's metric handles (they live in the gateway's registry).
#[derive(Clone)]
pub struct StoreMetrics {
    /// 1 while the store answers.
    pub up: IntGauge,
    /// Failed calls, by operation.
    pub errors: IntCounterVec,
    /// Call latency, by operation.
    pub calls: HistogramVec,
}

pub struct Store {
    pub cfg: config::Store,
    client: redis::Client,
    /// The background calls' connection, made by the service (its tasks live on the
    /// service's runtime).
    conn: ArcSwapOption<ConnectionManager>,
    /// The request path's connection, made by the first request that needs it, so its
    /// driver task runs on the proxy's own runtime: a call then hands its command to a
    /// task on the same threads instead of waking another thread and back (measured:
    /// docs/cluster.md, "Cost").
    /// Made afresh whenever the store comes back up, so a connection that failed while
    /// it was away is not what the first requests after it meet.
    request_conn: arc_swap::ArcSwap<tokio::sync::OnceCell<ConnectionManager>>,
    up: AtomicBool,
    /// When the store last went up or down (or the gateway started).
    changed: Mutex<Instant>,
    /// Tells this gateway's writes from other gateways' (locks, events).
    pub instance: String,
    metrics: StoreMetrics,
    last_error: Mutex<Option<String>>,
    events: broadcast::Sender<Event>,
}

impl Store {
    /// Prepares the client; connects nothing (the service does, and reconnects).
    pub fn new(cfg: config::Store, metrics: StoreMetrics) -> Result<Store, String> {
        let mut info = cfg
            .url
            .as_str()
            .into_connection_info()
            .map_err(|e| format!("store.redis: {e}"))?;
        // Without TCP_NODELAY, Nagle holds a small command back while an earlier one is
        // unacknowledged: with pipelined calls that is latency on most of them.
        let tcp = info.tcp_settings().clone().set_nodelay(true);
        info = info.set_tcp_settings(tcp);
        if let Some(p) = &cfg.password {
            let password = String::from_utf8_lossy(p.expose()).into_owned();
            let settings = info.redis_settings().clone().set_password(password);
            info = info.set_redis_settings(settings);
        }
        let client = match &cfg.ca_file {
            Some(ca) => {
                let pem = std::fs::read(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
                redis::Client::build_with_tls(
                    info,
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(pem),
                    },
                )
            }
            None => redis::Client::open(info),
        }
        .map_err(|e| format!("store.redis: {e}"))?;
        metrics.up.set(0);
        let (events, _) = broadcast::channel(256);
        Ok(Store {
            client,
            conn: ArcSwapOption::empty(),
            request_conn: arc_swap::ArcSwap::from_pointee(tokio::sync::OnceCell::new()),
            up: AtomicBool::new(false),
            changed: Mutex::new(Instant::now()),
            instance: format!("{}-{:016x}", std::process::id(), rand::random::<u64>()),
            metrics,
            last_error: Mutex::new(None),
            events,
            cfg,
        })
    }

    /// The address without credentials, for logs and `/status`.
    pub fn address(&self) -> &str {
        &self.cfg.url
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// How long the store has been down (since start, if it never came up); `None`
    /// while it is up.
    pub fn down_for(&self) -> Option<Duration> {
        if self.is_up() {
            return None;
        }
        Some(self.changed.lock().map_or(Duration::ZERO, |t| t.elapsed()))
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    /// A key of this deployment: the configured prefix, then `rest`.
    pub fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.cfg.key_prefix)
    }

    /// Store events (certificates and challenges written by any gateway), and a
    /// `Resync` whenever they may have been missed.
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Runs one call on the request path: the store's budget (`timeout`), on the
    /// request path's own connection. See [`Store::call_within`].
    pub async fn call<T, F>(
        &self,
        op: &'static str,
        f: impl FnOnce(ConnectionManager) -> F,
    ) -> Result<T, StoreError>
    where
        F: Future<Output = RedisResult<T>>,
    {
        if !self.is_up() {
            return Err(StoreError::Down);
        }
        let cell = self.request_conn.load_full();
        let conn = cell.get_or_try_init(|| self.make_request_conn()).await?;
        self.run(op, self.cfg.timeout, conn, f).await
    }

    /// The request path's connection, connected (bounded by `connect_timeout`) by the
    /// first request that needs it, on that request's runtime; others wait for it.
    async fn make_request_conn(&self) -> Result<ConnectionManager, StoreError> {
        let mut conn =
            ConnectionManager::new_lazy_with_config(self.client.clone(), manager_config(&self.cfg))
                .map_err(|e| StoreError::Redis(e.to_string()))?;
        let within = self.cfg.connect_timeout;
        match tokio::time::timeout(within, redis::cmd("PING").query_async::<String>(&mut conn))
            .await
        {
            Ok(Ok(_)) => Ok(conn),
            Ok(Err(e)) => Err(StoreError::Redis(e.to_string())),
            Err(_) => Err(StoreError::Timeout(within)),
        }
    }

    /// Runs one call, at once refused while the store is down, cut off after
    /// `budget`. A failure to reach the server marks the store down; an error the
    /// server answered does not.
    pub async fn call_within<T, F>(
        &self,
        op: &'static str,
        budget: Duration,
        f: impl FnOnce(ConnectionManager) -> F,
    ) -> Result<T, StoreError>
    where
        F: Future<Output = RedisResult<T>>,
    {
        if !self.is_up() {
            return Err(StoreError::Down);
        }
        let Some(conn) = self.conn.load_full() else {
            return Err(StoreError::Down);
        };
        self.run(op, budget, &conn, f).await
    }

    async fn run<T, F>(
        &self,
        op: &'static str,
        budget: Duration,
        conn: &ConnectionManager,
        f: impl FnOnce(ConnectionManager) -> F,
    ) -> Result<T, StoreError>
    where
        F: Future<Output = RedisResult<T>>,
    {
        let started = Instant::now();
        let result = tokio::time::timeout(budget, f(conn.clone())).await;
        self.metrics
            .calls
            .with_label_values(&[op])
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                let unreachable = unreachable(&e);
                self.failed(op, &e.to_string(), unreachable);
                Err(StoreError::Redis(e.to_string()))
            }
            Err(_) => {
                self.failed(op, &format!("no answer within {budget:?}"), true);
                Err(StoreError::Timeout(budget))
            }
        }
    }

    /// Counts a failed call; when the server could not be reached, the store is down
    /// (logged once, until it is up again).
    fn failed(&self, op: &'static str, error: &str, unreachable: bool) {
        self.metrics.errors.with_label_values(&[op]).inc();
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(format!("{op}: {error}"));
        }
        if unreachable && self.up.swap(false, Ordering::AcqRel) {
            self.metrics.up.set(0);
            if let Ok(mut t) = self.changed.lock() {
                *t = Instant::now();
            }
            tracing::warn!(
                event = "store_down",
                store = %self.cfg.url,
                op,
                error,
                "shared store unreachable: rate limits use their fallback, certificates stay as they are"
            );
        }
    }

    fn mark_up(&self) {
        if !self.up.swap(true, Ordering::AcqRel) {
            self.request_conn
                .store(std::sync::Arc::new(tokio::sync::OnceCell::new()));
            self.metrics.up.set(1);
            if let Ok(mut t) = self.changed.lock() {
                *t = Instant::now();
            }
            tracing::info!(event = "store_up", store = %self.cfg.url, "shared store reachable");
        }
    }
}

/// How both connections behave: our own budgets cut calls short; the response timeout
/// frees a call the server never answers (a hung server) for good; the probe does the
/// retrying, with its own backoff.
fn manager_config(cfg: &config::Store) -> redis::aio::ConnectionManagerConfig {
    redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(cfg.connect_timeout))
        .set_response_timeout(Some(Duration::from_secs(10)))
        .set_number_of_retries(1)
}

/// Whether an error means the server was not reached (rather than an answer).
fn unreachable(e: &RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_timeout() || e.is_connection_refusal()
}
