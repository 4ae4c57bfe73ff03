//! The TOML file as written by operators: serde types with `deny_unknown_fields`.
//!
//! Values that have a syntax of their own (durations, addresses, CIDRs) are parsed
//! here, during deserialisation, so that a bad one is reported with its line and key.
//! Cross-references and defaults are resolved in `validate.rs`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer};

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct File {
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub log: LogSection,
    #[serde(default)]
    pub listeners: Vec<ListenerSection>,
    #[serde(default)]
    pub pools: BTreeMap<String, PoolSection>,
    #[serde(default)]
    pub routes: Vec<RouteSection>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    pub threads: Option<usize>,
    pub shutdown_grace: Option<Dur>,
    #[serde(default)]
    pub trusted_proxies: Vec<Cidr>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    pub level: Option<String>,
    pub format: Option<LogFormat>,
    pub access_log: Option<bool>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Json,
    Pretty,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerSection {
    pub address: SocketAddr,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSection {
    pub replicas: Vec<String>,
    pub connect_timeout: Option<Dur>,
    pub read_timeout: Option<Dur>,
    pub write_timeout: Option<Dur>,
    pub idle_timeout: Option<Dur>,
    pub upgrade_idle_timeout: Option<Dur>,
    pub max_retries: Option<usize>,
    pub health: Option<HealthSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSection {
    pub path: Option<String>,
    pub interval: Option<Dur>,
    pub timeout: Option<Dur>,
    pub healthy_after: Option<usize>,
    pub unhealthy_after: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    pub name: Option<String>,
    pub host: Option<String>,
    pub path: Option<String>,
    #[serde(default)]
    pub strip_prefix: bool,
    pub pool: String,
}

/// A duration written like `10s`, `250ms`, `1m30s`.
#[derive(Debug, Clone, Copy)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map(Dur).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {s:?} ({e}); write e.g. \"500ms\", \"10s\", \"1m\""
            ))
        })
    }
}

/// An address range like `10.0.0.0/8`, or one address (`192.0.2.7` means /32).
#[derive(Debug, Clone, Copy)]
pub struct Cidr(pub IpNet);

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if let Ok(net) = s.parse::<IpNet>() {
            return Ok(Cidr(net.trunc()));
        }
        s.parse::<std::net::IpAddr>()
            .map(|ip| Cidr(IpNet::from(ip)))
            .map_err(|_| {
                serde::de::Error::custom(format!(
                    "invalid address or CIDR {s:?}; write e.g. \"10.0.0.0/8\" or \"192.0.2.7\""
                ))
            })
    }
}
