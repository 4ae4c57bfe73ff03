//! On-demand TLS: certificates for names the file does not list (customers pointing
//! their own domains at the product), ordered at the first handshake for a name, and
//! only when the app's ask endpoint allows it (`GET <ask>?domain=<name>` answering 2xx,
//! exactly as Caddy asks). A refused name is remembered for `refusal_ttl`; concurrent
//! handshakes for one name share one ask and one order; new names are bounded per
//! minute and in total. Admitted names are then kept and renewed by the manager like
//! the file's sites (`manager.rs`), each with a certificate of its own.
//!
//! A handshake only ever waits for its own name, at most `handshake_wait`, and a name
//! that is refused, over a bound, or whose order failed fails at once.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use dashmap::DashMap;
use tokio::sync::{Notify, OnceCell, Semaphore};

use super::{acme, manager, TlsState};
use crate::config::OnDemand;
use crate::metrics::Metrics;

/// Asks in flight at once, over all names: a scan of random names against a slow ask
/// endpoint fails fast beyond this instead of piling up waiting handshakes.
const ASKS_AT_ONCE: usize = 16;

/// Refused names remembered at most (a scan of random names must not grow memory).
const REFUSALS_KEPT: usize = 10_000;

#[derive(Debug, Clone)]
enum Decision {
    Allowed,
    Refused(String),
    /// The endpoint could not be asked (down, slow, not HTTP): not remembered.
    Unknown(String),
}

pub struct OnDemandState {
    /// Names allowed and kept by this gateway (ordered, installed, renewed).
    admitted: DashMap<String, ()>,
    /// Refused names, until when they stay refused.
    refused: DashMap<String, Instant>,
    /// The ask in flight per name, shared by every handshake waiting on it.
    asking: DashMap<String, Arc<OnceCell<Decision>>>,
    /// When each of the last minute's new names was admitted.
    recent: Mutex<VecDeque<Instant>>,
    ask_slots: Semaphore,
    /// Made at the first ask (an error: no TLS roots could be loaded, say).
    client: OnceLock<Result<reqwest::Client, String>>,
    /// Fired when a certificate is installed or an order ends: waiting handshakes look.
    pub settled: Notify,
    /// Fired when a name is admitted: the manager starts its order at once.
    pub wake: Notify,
}

impl Default for OnDemandState {
    fn default() -> Self {
        OnDemandState {
            admitted: DashMap::new(),
            refused: DashMap::new(),
            asking: DashMap::new(),
            recent: Mutex::new(VecDeque::new()),
            ask_slots: Semaphore::new(ASKS_AT_ONCE),
            client: OnceLock::new(),
            settled: Notify::new(),
            wake: Notify::new(),
        }
    }
}

/// Whether a CA could validate `name` at all (not an IP, not a local name).
fn orderable(name: &str) -> bool {
    name.len() <= 253
        && name.contains('.')
        && name.parse::<std::net::IpAddr>().is_err()
        && !name.ends_with(".localhost")
        && !name.ends_with(".local")
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

impl OnDemandState {
    /// Every name admitted so far.
    pub fn admitted(&self) -> Vec<String> {
        self.admitted.iter().map(|e| e.key().clone()).collect()
    }

    /// Stops keeping `name` (the ask endpoint no longer allows it).
    pub fn forget(&self, metrics: &Metrics, name: &str, ttl: Duration) {
        self.admitted.remove(name);
        self.count_names(metrics);
        self.refuse(name, ttl);
    }

    /// Keeps `name` from now on (admitted, or restored from an earlier run).
    fn keep(&self, metrics: &Metrics, name: &str) {
        self.admitted.insert(name.to_owned(), ());
        self.count_names(metrics);
    }

    /// `gateway_tls_on_demand_names`, after every change to the admitted set.
    fn count_names(&self, metrics: &Metrics) {
        metrics.on_demand_names.set(self.admitted.len() as i64);
    }

    /// Whether the ask endpoint refused `name` within its refusal TTL; an expired
    /// refusal is forgotten here.
    fn recently_refused(&self, name: &str) -> bool {
        match self.refused.get(name).map(|u| *u) {
            Some(until) if until > Instant::now() => true,
            Some(_) => {
                self.refused.remove(name);
                false
            }
            None => false,
        }
    }

    fn refuse(&self, name: &str, ttl: Duration) {
        if self.refused.len() >= REFUSALS_KEPT {
            let now = Instant::now();
            self.refused.retain(|_, until| *until > now);
            if self.refused.len() >= REFUSALS_KEPT {
                self.refused.clear();
            }
        }
        self.refused.insert(name.to_owned(), Instant::now() + ttl);
    }

    /// Makes sure `name` (lowercase SNI not covered by the file's sites) has a
    /// certificate in service: at once if it has one, else after the ask and the order,
    /// within `policy.handshake_wait`. `Err` says why the handshake is refused.
    pub async fn ensure(
        &self,
        tls: &TlsState,
        metrics: &Metrics,
        policy: &OnDemand,
        state_dir: &Path,
        name: &str,
    ) -> Result<(), String> {
        let started = SystemTime::now();
        let deadline = Instant::now() + policy.handshake_wait;
        if !self.admitted.contains_key(name) {
            self.admit(tls, metrics, policy, state_dir, name).await?;
        }
        loop {
            let settled = self.settled.notified();
            if tls.store.get(name).is_some() {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if let Some(status) = tls.orders.get(name) {
                if let Some((at, e)) = &status.last_error {
                    // Failed while we waited, or backing off past our wait: say so now
                    // rather than hold the handshake for nothing.
                    let retry_later = status
                        .retry_at
                        .is_some_and(|t| t > SystemTime::now() + left);
                    if *at >= started || retry_later {
                        return Err(format!("the order for {name} failed: {e}"));
                    }
                }
            }
            if left.is_zero() || tokio::time::timeout(left, settled).await.is_err() {
                return Err(format!(
                    "no certificate for {name} within {:?} (the order goes on)",
                    policy.handshake_wait
                ));
            }
        }
    }

    async fn admit(
        &self,
        tls: &TlsState,
        metrics: &Metrics,
        policy: &OnDemand,
        state_dir: &Path,
        name: &str,
    ) -> Result<(), String> {
        let count = |result: &str| {
            metrics.on_demand.with_label_values(&[result]).inc();
        };
        if !orderable(name) {
            count("invalid_name");
            return Err(format!("{name:?} is not a name a CA can validate"));
        }
        if self.recently_refused(name) {
            count("refused_cached");
            return Err(format!("{name} was refused by the ask endpoint recently"));
        }
        // A certificate kept by an earlier run is served again without asking; its
        // renewal asks (`renew.rs`).
        let kept = acme::load_kept(state_dir, &[name.to_owned()])
            .ok()
            .flatten();
        if let Some(entry) = kept {
            self.keep(metrics, name);
            manager::install(tls, metrics, entry, false);
            count("restored");
            return Ok(());
        }
        // Held until this function returns, after the answer is recorded below.
        let (decision, _ask) = self.decide(policy, name).await;
        match decision {
            Decision::Allowed => {}
            Decision::Refused(why) => {
                count("refused");
                self.refuse(name, policy.refusal_ttl);
                tracing::info!(event = "on_demand_refused", name, why = %why, "the ask endpoint refused a name");
                return Err(format!("the ask endpoint refused {name}: {why}"));
            }
            Decision::Unknown(why) => {
                count("ask_error");
                tracing::warn!(event = "on_demand_ask_failed", name, error = %why, ask = %policy.ask, "the ask endpoint did not answer; the handshake fails");
                return Err(format!(
                    "the ask endpoint could not be asked about {name}: {why}"
                ));
            }
        }
        {
            let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            if self.admitted.contains_key(name) {
                return Ok(()); // a concurrent handshake admitted it meanwhile
            }
            if self.admitted.len() >= policy.max_names {
                count("max_names");
                tracing::warn!(
                    event = "on_demand_limited",
                    name,
                    limit = "max_names",
                    "no new on-demand names"
                );
                return Err(format!("max_names ({}) reached", policy.max_names));
            }
            let minute_ago = Instant::now() - Duration::from_secs(60);
            while recent.front().is_some_and(|t| *t < minute_ago) {
                recent.pop_front();
            }
            if recent.len() >= policy.orders_per_minute as usize {
                count("rate_limited");
                tracing::warn!(
                    event = "on_demand_limited",
                    name,
                    limit = "orders_per_minute",
                    "no new on-demand names this minute"
                );
                return Err(format!(
                    "orders_per_minute ({}) reached",
                    policy.orders_per_minute
                ));
            }
            recent.push_back(Instant::now());
            self.keep(metrics, name);
        }
        count("allowed");
        tracing::info!(
            event = "on_demand_admitted",
            name,
            "the ask endpoint allowed a name: ordering its certificate"
        );
        self.wake.notify_one();
        Ok(())
    }

    /// One ask per name at a time, shared by every handshake that needs the answer;
    /// the ask is forgotten when the returned handle is dropped.
    async fn decide<'a>(&'a self, policy: &OnDemand, name: &'a str) -> (Decision, Ask<'a>) {
        let cell = Arc::clone(
            self.asking
                .entry(name.to_owned())
                .or_insert_with(|| Arc::new(OnceCell::new()))
                .value(),
        );
        let decision = cell
            .get_or_init(|| async {
                // A handshake that found the name neither admitted nor refused may get
                // here after the ask that settled it is over: that answer stands.
                if self.admitted.contains_key(name) {
                    return Decision::Allowed;
                }
                if self.recently_refused(name) {
                    return Decision::Refused("it refused the name recently".to_owned());
                }
                match self.ask_slots.try_acquire() {
                    Ok(_slot) => self.ask(policy, name).await,
                    Err(_) => Decision::Unknown(format!("{ASKS_AT_ONCE} asks in flight already")),
                }
            })
            .await
            .clone();
        let ask = Ask {
            asking: &self.asking,
            name,
            cell,
        };
        (decision, ask)
    }

    async fn ask(&self, policy: &OnDemand, name: &str) -> Decision {
        let client = self.client.get_or_init(|| {
            reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|e| format!("cannot make an HTTP client: {e}"))
        });
        let client = match client {
            Ok(c) => c,
            Err(e) => return Decision::Unknown(e.clone()),
        };
        let sent = client
            .get(&policy.ask)
            .query(&[("domain", name)])
            .timeout(policy.ask_timeout)
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => Decision::Allowed,
            Ok(r) => Decision::Refused(format!("it answered {}", r.status())),
            Err(e) if e.is_timeout() => {
                Decision::Unknown(format!("no answer within {:?}", policy.ask_timeout))
            }
            Err(e) => Decision::Unknown(without_url(&e)),
        }
    }

    /// Asks again before a renewal: `Ok(false)` when the app no longer allows `name`.
    pub async fn still_allowed(&self, policy: &OnDemand, name: &str) -> Result<bool, String> {
        match self.ask(policy, name).await {
            Decision::Allowed => Ok(true),
            Decision::Refused(_) => Ok(false),
            Decision::Unknown(e) => Err(e),
        }
    }
}

/// reqwest's error text without the URL (it may carry the app's internal address twice).
fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(u) = e.url() {
        s = s.replace(&format!(" ({u})"), "").replace(u.as_str(), "");
    }
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        s = format!("{s}: {inner}");
        source = inner.source();
    }
    s
}

/// A name's shared ask, forgotten when dropped: by `admit`, once the answer is recorded
/// (admitted or refused), so that a later handshake finds the ask or the record, never
/// neither (which made it ask again).
struct Ask<'a> {
    asking: &'a DashMap<String, Arc<OnceCell<Decision>>>,
    name: &'a str,
    cell: Arc<OnceCell<Decision>>,
}

impl Drop for Ask<'_> {
    fn drop(&mut self) {
        self.asking
            .remove_if(self.name, |_, c| Arc::ptr_eq(c, &self.cell));
    }
}

#[cfg(test)]
mod tests {
    use super::orderable;

    #[test]
    fn only_names_a_ca_could_validate_are_ordered() {
        assert!(orderable("shop.customer.example"));
        assert!(orderable("xn--bcher-kva.example"));
        for bad in [
            "localhost",
            "a.localhost",
            "127.0.0.1",
            "example",
            "a..b",
            "-a.b",
            "a_b.c",
            "",
        ] {
            assert!(!orderable(bad), "{bad}");
        }
    }
}
