//! Certificates shared by every gateway of a deployment: the ACME account, each site's
//! certificate and key (keys sealed, `seal.rs`), the lock that lets one gateway order
//! a name at a time, and the challenges the CA may ask any gateway for. Writes of a
//! certificate and its challenges are announced on one channel (`<prefix>events`), so
//! the other gateways serve a new certificate within a round trip, not a poll.
//!
//! The lock: `SET NX PX` with a value that ends in a fencing token (`INCR`), refreshed
//! while the order runs. A certificate is written only if the writer still holds the
//! very lock it took (one atomic script), so a gateway that stalled past its lock's
//! expiry cannot overwrite the work of the one that took over.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{seal, Store, StoreError};

/// How long a background store call may take (not on the request path).
const BACKGROUND_BUDGET: Duration = Duration::from_secs(3);

/// What the events channel carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A certificate for the site whose first name this is was written.
    Cert(String),
    /// An HTTP-01 token to answer, and its key authorization (public by design).
    Http01 {
        token: String,
        answer: String,
    },
    Http01Done(String),
    /// A TLS-ALPN-01 validation of a name: the SHA-256 of its key authorization.
    Alpn {
        name: String,
        digest: Vec<u8>,
    },
    AlpnDone(String),
    /// Events may have been missed (the listener (re)subscribed): read the store again.
    Resync,
}

impl Event {
    pub fn payload(&self) -> String {
        match self {
            Event::Cert(p) => format!("cert {p}"),
            Event::Http01 { token, answer } => format!("http01 {token} {answer}"),
            Event::Http01Done(t) => format!("http01-done {t}"),
            Event::Alpn { name, digest } => format!("alpn {name} {}", hex(digest)),
            Event::AlpnDone(n) => format!("alpn-done {n}"),
            Event::Resync => "resync".into(),
        }
    }

    pub fn parse(payload: &[u8]) -> Option<Event> {
        let text = std::str::from_utf8(payload).ok()?;
        let mut parts = text.split(' ');
        let kind = parts.next()?;
        let mut next = || parts.next().map(str::to_owned);
        Some(match kind {
            "cert" => Event::Cert(next()?),
            "http01" => Event::Http01 {
                token: next()?,
                answer: next()?,
            },
            "http01-done" => Event::Http01Done(next()?),
            "alpn" => Event::Alpn {
                name: next()?,
                digest: unhex(&next()?)?,
            },
            "alpn-done" => Event::AlpnDone(next()?),
            "resync" => Event::Resync,
            _ => return None,
        })
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A certificate as the store keeps it.
#[derive(Serialize, Deserialize)]
struct Record {
    v: u32,
    names: Vec<String>,
    chain: String,
    /// The private key, sealed.
    key: String,
}

/// A certificate read from the store: PEM chain and key.
#[derive(Debug, Clone)]
pub struct StoredCert {
    pub names: Vec<String>,
    pub chain: String,
    pub key: String,
}

/// A held order lock (its exact value, which ends in the fencing token).
#[derive(Debug, Clone)]
pub struct Lock {
    primary: String,
    value: String,
}

impl Lock {
    /// The fencing token: higher for every lock taken on the name.
    pub fn fence(&self) -> u64 {
        self.value
            .rsplit(':')
            .next()
            .and_then(|f| f.parse().ok())
            .unwrap_or(0)
    }
}

const TRY_LOCK: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local v = ARGV[1] .. ':' .. redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], v, 'PX', ARGV[2])
return v
"#;

const REFRESH: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"#;

const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

/// Writes the certificate only while the writer holds exactly this lock, then frees
/// the lock and announces the certificate.
const SAVE_FENCED: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', KEYS[3], ARGV[3])
return 1
"#;

impl Store {
    fn seal_key(&self) -> Option<&[u8]> {
        self.cfg.encryption_key.as_ref().map(|k| k.expose())
    }

    async fn background<T, F>(
        &self,
        op: &'static str,
        f: impl FnOnce(redis::aio::ConnectionManager) -> F,
    ) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        self.call_within(op, BACKGROUND_BUDGET, f).await
    }

    /// The certificate of the site whose first name is `primary`, if the store has one.
    pub async fn load_cert(&self, primary: &str) -> Result<Option<StoredCert>, StoreError> {
        let key = self.key(&format!("cert:{primary}"));
        let k = key.clone();
        let raw: Option<String> = self
            .background("cert_get", |mut c| async move {
                redis::cmd("GET").arg(&k).query_async(&mut c).await
            })
            .await?;
        let Some(raw) = raw else { return Ok(None) };
        let data = |why: String| StoreError::Data {
            key: key.clone(),
            why,
        };
        let r: Record = serde_json::from_str(&raw).map_err(|e| data(e.to_string()))?;
        if r.v != 1 {
            return Err(data(format!(
                "record version {} (this gateway reads 1)",
                r.v
            )));
        }
        let pem = seal::open(self.seal_key(), &r.key, &key).map_err(data)?;
        Ok(Some(StoredCert {
            names: r.names,
            chain: r.chain,
            key: pem,
        }))
    }

    /// Takes the order lock of `primary` for `ttl`, unless another gateway holds it.
    pub async fn try_lock(&self, primary: &str, ttl: Duration) -> Result<Option<Lock>, StoreError> {
        let (lock, fence) = (
            self.key(&format!("lock:{primary}")),
            self.key(&format!("fence:{primary}")),
        );
        let (instance, ms) = (self.instance.clone(), ttl.as_millis() as u64);
        let value: Option<String> = self
            .background("lock", |mut c| async move {
                redis::Script::new(TRY_LOCK)
                    .key(lock)
                    .key(fence)
                    .arg(instance)
                    .arg(ms)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(value.map(|value| Lock {
            primary: primary.to_owned(),
            value,
        }))
    }

    /// Extends a held lock; false when it is no longer ours.
    pub async fn refresh_lock(&self, lock: &Lock, ttl: Duration) -> Result<bool, StoreError> {
        let key = self.key(&format!("lock:{}", lock.primary));
        let (value, ms) = (lock.value.clone(), ttl.as_millis() as u64);
        let n: i64 = self
            .background("lock", |mut c| async move {
                redis::Script::new(REFRESH)
                    .key(key)
                    .arg(value)
                    .arg(ms)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(n == 1)
    }

    pub async fn release_lock(&self, lock: &Lock) -> Result<(), StoreError> {
        let key = self.key(&format!("lock:{}", lock.primary));
        let value = lock.value.clone();
        let _: i64 = self
            .background("lock", |mut c| async move {
                redis::Script::new(RELEASE)
                    .key(key)
                    .arg(value)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(())
    }

    /// Writes a certificate ordered under `lock` and announces it; false (nothing
    /// written) when the lock is no longer this gateway's.
    pub async fn save_cert(
        &self,
        lock: &Lock,
        names: &[String],
        chain: &str,
        key_pem: &str,
    ) -> Result<bool, StoreError> {
        let cert_key = self.key(&format!("cert:{}", lock.primary));
        let record = Record {
            v: 1,
            names: names.to_vec(),
            chain: chain.to_owned(),
            key: seal::seal(self.seal_key(), key_pem, &cert_key).map_err(|why| {
                StoreError::Data {
                    key: cert_key.clone(),
                    why,
                }
            })?,
        };
        let json = serde_json::to_string(&record).map_err(|e| StoreError::Data {
            key: cert_key.clone(),
            why: e.to_string(),
        })?;
        let lock_key = self.key(&format!("lock:{}", lock.primary));
        let channel = self.key("events");
        let (value, event) = (
            lock.value.clone(),
            Event::Cert(lock.primary.clone()).payload(),
        );
        let n: i64 = self
            .background("cert_set", |mut c| async move {
                redis::Script::new(SAVE_FENCED)
                    .key(lock_key)
                    .key(cert_key)
                    .key(channel)
                    .arg(value)
                    .arg(json)
                    .arg(event)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(n == 1)
    }

    /// The ACME account (its credentials JSON) for `directory`, if one was saved.
    pub async fn load_account(&self, directory: &str) -> Result<Option<String>, StoreError> {
        let key = self.key(&format!("acme:account:{directory}"));
        let k = key.clone();
        let raw: Option<String> = self
            .background("account_get", |mut c| async move {
                redis::cmd("GET").arg(k).query_async(&mut c).await
            })
            .await?;
        raw.map(|r| {
            seal::open(self.seal_key(), &r, &key).map_err(|why| StoreError::Data { key, why })
        })
        .transpose()
    }

    /// Saves the account unless one is there already (another gateway's is as good).
    pub async fn save_account(&self, directory: &str, json: &str) -> Result<(), StoreError> {
        let key = self.key(&format!("acme:account:{directory}"));
        let sealed = seal::seal(self.seal_key(), json, &key).map_err(|why| StoreError::Data {
            key: key.clone(),
            why,
        })?;
        let _: Option<String> = self
            .background("account_set", |mut c| async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(sealed)
                    .arg("NX")
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(())
    }

    /// Forgets the account (the CA no longer knows it).
    pub async fn forget_account(&self, directory: &str) -> Result<(), StoreError> {
        let key = self.key(&format!("acme:account:{directory}"));
        let _: i64 = self
            .background("account_del", |mut c| async move {
                redis::cmd("DEL").arg(key).query_async(&mut c).await
            })
            .await?;
        Ok(())
    }

    /// Publishes a challenge answer (kept for `ttl`, announced to every gateway).
    pub async fn put_challenge(&self, event: &Event, ttl: Duration) -> Result<(), StoreError> {
        let (key, value) = match event {
            Event::Http01 { token, answer } => {
                (self.key(&format!("http01:{token}")), answer.clone())
            }
            Event::Alpn { name, digest } => (self.key(&format!("alpn:{name}")), hex(digest)),
            _ => return Ok(()),
        };
        let (channel, payload) = (self.key("events"), event.payload());
        let ms = ttl.as_millis() as u64;
        let _: () = self
            .background("challenge_set", |mut c| async move {
                redis::pipe()
                    .atomic()
                    .cmd("SET")
                    .arg(key)
                    .arg(value)
                    .arg("PX")
                    .arg(ms)
                    .ignore()
                    .cmd("PUBLISH")
                    .arg(channel)
                    .arg(payload)
                    .ignore()
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(())
    }

    /// Withdraws a challenge (`Http01Done` / `AlpnDone`) everywhere.
    pub async fn drop_challenge(&self, event: &Event) -> Result<(), StoreError> {
        let key = match event {
            Event::Http01Done(token) => self.key(&format!("http01:{token}")),
            Event::AlpnDone(name) => self.key(&format!("alpn:{name}")),
            _ => return Ok(()),
        };
        let (channel, payload) = (self.key("events"), event.payload());
        let _: () = self
            .background("challenge_del", |mut c| async move {
                redis::pipe()
                    .atomic()
                    .cmd("DEL")
                    .arg(key)
                    .ignore()
                    .cmd("PUBLISH")
                    .arg(channel)
                    .arg(payload)
                    .ignore()
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(())
    }

    /// The answer to an HTTP-01 token another gateway published (request path: the
    /// store's own budget).
    pub async fn http01(&self, token: &str) -> Result<Option<String>, StoreError> {
        let key = self.key(&format!("http01:{token}"));
        self.call("challenge_get", |mut c| async move {
            redis::cmd("GET").arg(key).query_async(&mut c).await
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_and_garbage_is_refused() {
        for e in [
            Event::Cert("shop.test".into()),
            Event::Http01 {
                token: "tok".into(),
                answer: "tok.thumb".into(),
            },
            Event::Http01Done("tok".into()),
            Event::Alpn {
                name: "shop.test".into(),
                digest: vec![0, 1, 254, 255],
            },
            Event::AlpnDone("shop.test".into()),
            Event::Resync,
        ] {
            assert_eq!(Event::parse(e.payload().as_bytes()), Some(e));
        }
        assert_eq!(Event::parse(b"cert"), None);
        assert_eq!(Event::parse(b"alpn x zz"), None);
        assert_eq!(Event::parse(b"launch missiles"), None);
        assert_eq!(Event::parse(&[0xff, 0xfe]), None);
    }
}
