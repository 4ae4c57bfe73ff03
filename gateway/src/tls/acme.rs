//! One ACME order (RFC 8555, via `instant-acme`): account (created once, kept in the
//! state dir and, with a store, shared), HTTP-01 challenges answered by the gateway's
//! own plain listener or TLS-ALPN-01 ones by its HTTPS listeners (`alpn.rs`), published
//! to every gateway through the store when there is one, or DNS-01 ones as TXT records
//! through the zone's primary (`dns01.rs`), CSR, certificate. Scheduling,
//! the cluster lock and backoff live in `renew.rs` and `manager.rs`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use rcgen::{CertificateParams, DistinguishedName, KeyPair};

use super::store::{entry_from_pem, write_atomic, Entry};
use super::{dns01, TlsState};
use crate::config::{Acme, Challenge};
use crate::metrics::Metrics;
use crate::store::{Event, Store};

const ACCOUNT_GONE: &str = "urn:ietf:params:acme:error:accountDoesNotExist";

/// Where an account for `directory` is kept (one per ACME server).
fn account_path(state_dir: &Path, directory: &str) -> PathBuf {
    let safe: String = directory
        .trim_start_matches("https://")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    state_dir.join("acme").join(format!("account-{safe}.json"))
}

/// Where the certificate of the site whose first name is `primary` is kept.
pub fn cert_paths(state_dir: &Path, primary: &str) -> (PathBuf, PathBuf) {
    let dir = state_dir
        .join("acme")
        .join(primary.replace('*', "_wildcard"));
    (dir.join("cert.pem"), dir.join("key.pem"))
}

/// The certificate an earlier run kept for the site whose names are `names`, if it is
/// there and not expired (served at start without the CA).
pub fn load_kept(state_dir: &Path, names: &[String]) -> Result<Option<Entry>, String> {
    let (cert, key) = cert_paths(state_dir, &names[0]);
    match (
        std::fs::read_to_string(&cert),
        std::fs::read_to_string(&key),
    ) {
        (Ok(c), Ok(k)) => entry_from_pem(&c, &k, names.to_vec(), "acme")
            .map(|e| (e.not_after > super::manager::now_secs()).then_some(e)),
        _ => Ok(None),
    }
}

/// The account: the shared one when a store holds one (every gateway of a deployment
/// uses the account the first one registered), else the one kept in the state dir,
/// else a new one, kept in both.
async fn account(acme: &Acme, state_dir: &Path, store: Option<&Store>) -> Result<Account, String> {
    let builder = || match &acme.ca_root {
        Some(root) => Account::builder_with_root(root)
            .map_err(|e| format!("cannot use ca_root {}: {e}", root.display())),
        None => Account::builder().map_err(|e| format!("cannot set up the ACME client: {e}")),
    };
    let path = account_path(state_dir, &acme.directory);
    let shared = match store {
        Some(s) => s.load_account(&acme.directory).await.unwrap_or_else(|e| {
            tracing::warn!(event = "acme_account_store_failed", error = %e, "using the local account, if any");
            None
        }),
        None => None,
    };
    let in_store = shared.is_some();
    if let Some(saved) = shared.or_else(|| std::fs::read_to_string(&path).ok()) {
        match serde_json::from_str::<AccountCredentials>(&saved) {
            Ok(creds) => {
                if let (Some(s), false) = (store, in_store) {
                    // An account from before the store: share it from now on.
                    if let Err(e) = s.save_account(&acme.directory, &saved).await {
                        tracing::warn!(event = "acme_account_store_failed", error = %e);
                    }
                }
                return builder()?
                    .from_credentials(creds)
                    .await
                    .map_err(|e| format!("cannot restore the ACME account: {e}"));
            }
            Err(e) => {
                tracing::warn!(event = "acme_account_unreadable", path = %path.display(), error = %e, "creating a new account")
            }
        }
    }
    let contact: Vec<String> = acme.email.iter().map(|e| format!("mailto:{e}")).collect();
    let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
    let new = NewAccount {
        contact: &contact,
        terms_of_service_agreed: true,
        only_return_existing: false,
    };
    let (account, creds) = builder()?
        .create(&new, acme.directory.clone(), None)
        .await
        .map_err(|e| format!("cannot create an ACME account at {}: {e}", acme.directory))?;
    let json = serde_json::to_vec(&creds).map_err(|e| e.to_string())?;
    write_atomic(&path, &json, 0o600)
        .map_err(|e| format!("cannot save the ACME account to {}: {e}", path.display()))?;
    if let Some(s) = store {
        if let Err(e) = s
            .save_account(&acme.directory, &String::from_utf8_lossy(&json))
            .await
        {
            tracing::warn!(event = "acme_account_store_failed", error = %e, "the account is kept locally only");
        }
    }
    tracing::info!(event = "acme_account_created", directory = %acme.directory, "ACME account created");
    Ok(account)
}

/// Orders a certificate for `names`; returns (chain PEM, key PEM).
/// With a store, the account is the shared one and every challenge is published there
/// too, so the CA may reach any gateway of the deployment.
pub async fn order(
    acme: &Acme,
    names: &[String],
    state_dir: &Path,
    tls: &TlsState,
    store: Option<&Store>,
    metrics: &Metrics,
) -> Result<(String, String), String> {
    let zone = match &acme.challenge {
        Challenge::Dns01(dns) => Some(dns01::Zone::new(dns)?),
        _ => None,
    };
    let identifiers: Vec<Identifier> = names.iter().map(|n| Identifier::Dns(n.clone())).collect();
    let account = account(acme, state_dir, store).await?;
    let mut order = match account.new_order(&NewOrder::new(&identifiers)).await {
        Ok(o) => o,
        // The CA no longer knows the saved account (its database was reset, or the
        // account was deactivated): register a new one instead of failing forever.
        Err(instant_acme::Error::Api(p)) if p.r#type.as_deref() == Some(ACCOUNT_GONE) => {
            let path = account_path(state_dir, &acme.directory);
            tracing::warn!(event = "acme_account_gone", directory = %acme.directory, "the CA does not know our account: registering a new one");
            let _ = std::fs::remove_file(&path);
            if let Some(s) = store {
                let _ = s.forget_account(&acme.directory).await;
            }
            let account = self::account(acme, state_dir, store).await?;
            account
                .new_order(&NewOrder::new(&identifiers))
                .await
                .map_err(|e| format!("new order: {e}"))?
        }
        Err(e) => return Err(format!("new order: {e}")),
    };
    // What we publish for the CA, withdrawn once the order ends either way.
    let mut tokens = Vec::new();
    let mut alpn_names = Vec::new();
    let mut txt_records = Vec::new();
    let result = async {
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(|e| format!("authorization: {e}"))?;
            if authz.status == AuthorizationStatus::Valid {
                continue;
            }
            let kind = match acme.challenge {
                Challenge::Http01 => ChallengeType::Http01,
                Challenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
                Challenge::Dns01(_) => ChallengeType::Dns01,
            };
            let mut challenge = authz
                .challenge(kind.clone())
                .ok_or_else(|| format!("the CA offered no {kind:?} challenge"))?;
            match &acme.challenge {
                Challenge::Dns01(_) => {
                    let zone = zone.as_ref().ok_or("no [dns] zone")?;
                    let Identifier::Dns(name) = challenge.identifier().identifier else {
                        return Err("the CA asked to validate a non-DNS identifier".to_owned());
                    };
                    let record = dns01::record_name(name);
                    let value = challenge.key_authorization().dns_value();
                    let added = zone.add(&record, &value).await;
                    count(metrics, "add", added.is_ok());
                    if added.as_ref().map_or_else(|e| e.maybe_applied, |()| true) {
                        // Also when the server went silent: it may have taken it.
                        txt_records.push((record.clone(), value.clone()));
                    }
                    added.map_err(|e| e.message)?;
                    // The CA may look once and fail the order for good: only tell it
                    // when the zone's servers answer with the record.
                    zone.wait_visible(&record, &value).await?;
                }
                Challenge::Http01 => {
                    let token = challenge.token.clone();
                    let answer = challenge.key_authorization().as_str().to_owned();
                    tls.challenges.insert(token.clone(), answer.clone());
                    publish(
                        store,
                        Event::Http01 {
                            token: token.clone(),
                            answer,
                        },
                    )
                    .await;
                    tokens.push(token);
                }
                Challenge::TlsAlpn01 => {
                    let Identifier::Dns(name) = challenge.identifier().identifier else {
                        return Err("the CA asked to validate a non-DNS identifier".to_owned());
                    };
                    let name = name.clone();
                    let digest = challenge.key_authorization().digest().as_ref().to_vec();
                    tls.alpn.insert(&name, &digest)?;
                    publish(
                        store,
                        Event::Alpn {
                            name: name.clone(),
                            digest,
                        },
                    )
                    .await;
                    alpn_names.push(name);
                }
            }
            challenge
                .set_ready()
                .await
                .map_err(|e| format!("challenge: {e}"))?;
        }
        let retry = RetryPolicy::new()
            .initial_delay(Duration::from_millis(250))
            .timeout(Duration::from_secs(90));
        let status = order
            .poll_ready(&retry)
            .await
            .map_err(|e| format!("waiting for validation: {e}"))?;
        if status != OrderStatus::Ready {
            return Err(format!(
                "the CA did not validate the order (status {status:?})"
            ));
        }
        let mut params = CertificateParams::new(names.to_vec()).map_err(|e| e.to_string())?;
        params.distinguished_name = DistinguishedName::new();
        let key = KeyPair::generate().map_err(|e| e.to_string())?;
        let csr = params.serialize_request(&key).map_err(|e| e.to_string())?;
        order
            .finalize_csr(csr.der())
            .await
            .map_err(|e| format!("finalize: {e}"))?;
        let chain = order
            .poll_certificate(&retry)
            .await
            .map_err(|e| format!("certificate: {e}"))?;
        Ok((chain, key.serialize_pem()))
    }
    .await;
    for t in tokens {
        tls.challenges.remove(&t);
        withdraw(store, Event::Http01Done(t)).await;
    }
    for n in alpn_names {
        tls.alpn.remove(&n);
        withdraw(store, Event::AlpnDone(n)).await;
    }
    if let Some(zone) = &zone {
        for (record, value) in txt_records {
            let removed = zone.remove(&record, &value).await;
            count(metrics, "remove", removed.is_ok());
            if let Err(e) = removed {
                tracing::warn!(event = "dns_cleanup_failed", error = %e.message, "the challenge record may stay in the zone; remove it by hand");
            }
        }
    }
    result
}

fn count(metrics: &Metrics, op: &str, ok: bool) {
    let result = if ok { "ok" } else { "error" };
    metrics.dns_updates.with_label_values(&[op, result]).inc();
}

/// How long a published challenge is kept in the store at most (an order that dies
/// without withdrawing it leaves nothing behind for long).
const CHALLENGE_TTL: Duration = Duration::from_secs(600);

/// Publishes a challenge to every gateway; a store that cannot take it leaves it to
/// this gateway alone (the CA may still reach this one).
async fn publish(store: Option<&Store>, event: Event) {
    if let Some(s) = store {
        if let Err(e) = s.put_challenge(&event, CHALLENGE_TTL).await {
            tracing::warn!(event = "acme_challenge_store_failed", error = %e, "only this gateway answers the challenge");
        }
    }
}

async fn withdraw(store: Option<&Store>, event: Event) {
    if let Some(s) = store {
        if let Err(e) = s.drop_challenge(&event).await {
            tracing::debug!(event = "acme_challenge_store_failed", error = %e, "the challenge expires in the store by itself");
        }
    }
}
