//! Live reload: read the file, validate it fully, build a new snapshot (reusing pools
//! and rate limits whose settings did not change, health-checking new pools first),
//! then swap it in atomically. Requests in flight finish on the snapshot they started
//! with. Any error leaves the running config untouched.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::config::{self, Config};
use crate::metrics::Metrics;
use crate::state::{SharedState, Snapshot};

/// One reload attempt, for `/status`.
#[derive(Debug, Clone)]
pub struct ReloadRecord {
    pub at: SystemTime,
    pub trigger: &'static str,
    pub ok: bool,
    pub errors: Vec<String>,
    pub needs_restart: Vec<String>,
}

#[derive(Debug)]
pub enum Outcome {
    /// The new config serves; these settings keep their old values until a restart.
    Applied {
        needs_restart: Vec<String>,
    },
    Rejected {
        errors: Vec<String>,
    },
}

pub struct Reloader {
    /// The file the gateway was started with (`None`: the embedded default).
    source: Option<PathBuf>,
    state: SharedState,
    metrics: Arc<Metrics>,
    history: Mutex<VecDeque<ReloadRecord>>,
    /// One reload at a time: a SIGHUP during an admin reload waits its turn.
    serial: tokio::sync::Mutex<()>,
}

const HISTORY: usize = 20;

impl Reloader {
    pub fn new(source: Option<PathBuf>, state: SharedState, metrics: Arc<Metrics>) -> Self {
        Reloader {
            source,
            state,
            metrics,
            history: Mutex::new(VecDeque::new()),
            serial: tokio::sync::Mutex::new(()),
        }
    }

    pub fn history(&self) -> Vec<ReloadRecord> {
        self.history
            .lock()
            .map(|h| h.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub async fn reload(&self, trigger: &'static str) -> Outcome {
        let _one_at_a_time = self.serial.lock().await;
        let outcome = self.attempt().await;
        let (ok, errors, needs_restart) = match &outcome {
            Outcome::Applied { needs_restart } => (true, vec![], needs_restart.clone()),
            Outcome::Rejected { errors } => (false, errors.clone(), vec![]),
        };
        if ok {
            self.metrics.config_reloads.with_label_values(&["ok"]).inc();
            self.metrics.mark_config_loaded();
            tracing::info!(event = "config_reloaded", trigger, needs_restart = ?needs_restart, "configuration reloaded");
        } else {
            self.metrics
                .config_reloads
                .with_label_values(&["error"])
                .inc();
            for e in &errors {
                tracing::error!(event = "config_reload_failed", trigger, error = %e, "reload refused; the running config is unchanged");
            }
        }
        if let Ok(mut h) = self.history.lock() {
            if h.len() == HISTORY {
                h.pop_front();
            }
            h.push_back(ReloadRecord {
                at: SystemTime::now(),
                trigger,
                ok,
                errors,
                needs_restart,
            });
        }
        outcome
    }

    async fn attempt(&self) -> Outcome {
        let Some(path) = &self.source else {
            return Outcome::Rejected {
                errors: vec![
                    "running on the embedded default config: start with --config FILE to reload"
                        .into(),
                ],
            };
        };
        let mut config = match config::load(path) {
            Ok(c) => c,
            Err(e) => {
                return Outcome::Rejected {
                    errors: e.0.iter().map(|e| e.to_string()).collect(),
                }
            }
        };
        let current = self.state.load_full();
        let needs_restart = keep_restart_only(&current.config, &mut config);
        match Snapshot::build(config, Some(&current)).await {
            Ok(next) => {
                self.state.store(Arc::new(next));
                Outcome::Applied { needs_restart }
            }
            Err(e) => Outcome::Rejected {
                errors: e.0.iter().map(|e| e.to_string()).collect(),
            },
        }
    }
}

/// Settings bound at start-up (sockets, threads, logging) cannot change live: keep the
/// running values in `new`, so the snapshot describes what really runs, and name them.
pub fn keep_restart_only(running: &Config, new: &mut Config) -> Vec<String> {
    let mut changed = Vec::new();
    if new.listeners != running.listeners {
        changed.push("listeners".to_owned());
        new.listeners = running.listeners.clone();
    }
    if new.admin != running.admin {
        changed.push("admin".to_owned());
        new.admin = running.admin.clone();
    }
    if new.server.threads != running.server.threads {
        changed.push("server.threads".to_owned());
        new.server.threads = running.server.threads;
    }
    if new.server.upgrade_sock != running.server.upgrade_sock {
        changed.push("server.upgrade_sock".to_owned());
        new.server.upgrade_sock = running.server.upgrade_sock.clone();
    }
    if new.server.upstream_keepalive != running.server.upstream_keepalive {
        changed.push("server.upstream_keepalive".to_owned());
        new.server.upstream_keepalive = running.server.upstream_keepalive;
    }
    if new.server.reuse_port != running.server.reuse_port {
        changed.push("server.reuse_port".to_owned());
        new.server.reuse_port = running.server.reuse_port;
    }
    if new.server.shutdown_grace != running.server.shutdown_grace {
        changed.push("server.shutdown_grace".to_owned());
        new.server.shutdown_grace = running.server.shutdown_grace;
    }
    if new.store != running.store {
        changed.push("store".to_owned());
        new.store = running.store.clone();
    }
    if new.log.level != running.log.level || new.log.format != running.log.format {
        changed.push("log.level/log.format".to_owned());
        new.log.level = running.log.level.clone();
        new.log.format = running.log.format;
    }
    if new.log.access_log_file != running.log.access_log_file {
        changed.push("log.access_log_file".to_owned());
        new.log.access_log_file = running.log.access_log_file.clone();
    }
    changed
}
