//! `[store]`: the Redis server several gateways share, its secrets from the
//! environment, and what the request path may wait for it.

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use redis::IntoConnectionInfo;

use super::tls::resolve;
use super::{at, key, Validator};
use crate::config::schema::StoreSection;
use crate::config::{defaults, Secret, Store};

impl Validator<'_> {
    pub(super) fn store(
        &mut self,
        s: Option<StoreSection>,
        base: &Path,
        acme_sites: bool,
        warnings: &mut Vec<String>,
    ) -> Option<Store> {
        let s = s?;
        let b = [key("store")];
        let scheme_ok = s.redis.starts_with("redis://") || s.redis.starts_with("rediss://");
        match s.redis.as_str().into_connection_info() {
            Ok(info) if scheme_ok => {
                if info.redis_settings().password().is_some() {
                    self.err(
                        &at(&b, "redis"),
                        "the address holds a password: put it in an environment variable and \
                         name that in `password_env`, so it is never in the file",
                    );
                }
            }
            Ok(_) | Err(_) => self.err(
                &at(&b, "redis"),
                format!(
                    "invalid Redis address {:?}; write \"redis://HOST:PORT/DB\" or \
                     \"rediss://HOST:PORT/DB\" (TLS)",
                    s.redis
                ),
            ),
        }
        let password = s.password_env.as_deref().and_then(|var| {
            let v = (self.env)(var);
            if v.as_deref().is_none_or(str::is_empty) {
                self.err(
                    &at(&b, "password_env"),
                    format!("the environment variable {var} is not set"),
                );
            }
            v.map(Secret::new)
        });
        let ca_file = s.ca_file.as_deref().map(|f| resolve(base, f));
        if let Some(f) = &ca_file {
            if !s.redis.starts_with("rediss://") {
                self.err(&at(&b, "ca_file"), "only used with a rediss:// address");
            } else if let Err(e) = std::fs::read(f) {
                self.err(&at(&b, "ca_file"), format!("{}: {e}", f.display()));
            }
        }
        let key_prefix = s
            .key_prefix
            .unwrap_or_else(|| defaults::STORE_KEY_PREFIX.to_owned());
        if key_prefix.is_empty() || !key_prefix.bytes().all(|c| c.is_ascii_graphic()) {
            self.err(
                &at(&b, "key_prefix"),
                "must be printable ASCII without spaces, e.g. \"gateway:\"",
            );
        }
        let timeout = self.positive(&at(&b, "timeout"), s.timeout, defaults::STORE_TIMEOUT);
        if timeout > Duration::from_secs(1) {
            self.err(
                &at(&b, "timeout"),
                "at most 1s: every request that counts in the store may wait this long",
            );
        }
        let connect_timeout = self.positive(
            &at(&b, "connect_timeout"),
            s.connect_timeout,
            defaults::STORE_CONNECT_TIMEOUT,
        );
        let encryption_key = match s.encryption_key_env.as_deref() {
            Some(var) => match (self.env)(var) {
                None => {
                    self.err(
                        &at(&b, "encryption_key_env"),
                        format!("the environment variable {var} is not set"),
                    );
                    None
                }
                Some(v) => match base64::engine::general_purpose::STANDARD.decode(v.trim()) {
                    Ok(k) if k.len() == 32 => Some(Secret::new(k)),
                    _ => {
                        self.err(
                            &at(&b, "encryption_key_env"),
                            format!(
                                "{var} must hold 32 random bytes in base64 \
                                 (make one with `openssl rand -base64 32`)"
                            ),
                        );
                        None
                    }
                },
            },
            None if !acme_sites => None,
            None => {
                warnings.push(
                    "store: private keys and the ACME account go to Redis unencrypted; \
                     set `encryption_key_env` to seal them"
                        .into(),
                );
                None
            }
        };
        Some(Store {
            url: s.redis,
            password,
            ca_file,
            key_prefix,
            timeout,
            connect_timeout,
            required: s.required.unwrap_or(false),
            encryption_key,
        })
    }
}
