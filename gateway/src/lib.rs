//! An edge gateway on Pingora. One request walks down the modules in this order:
//! `app` (listeners, TLS) -> `connection` (cap, head deadline, HTTP/1 loop) -> `proxy`
//! (one function per pingora phase: `ctx`, `admit`, `body`, `respond`, `log`) ->
//! `upstream::pool` -> a replica. The table of every step, with the module that does
//! it, and the layers the modules sit in are in docs/architecture.md (one table, kept
//! there; `gateway/tests/layers.rs` enforces the layers).

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod access_line;
pub mod admin;
pub mod app;
pub mod cli;
pub mod client;
pub mod compress;
pub mod config;
pub mod connection;
pub mod connections;
pub mod headers;
pub mod lifecycle;
pub mod metrics;
pub mod net;
pub mod policy;
pub mod proxy;
pub mod ratelimit;
pub mod reload;
pub mod request_id;
pub mod routing;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod traffic;
pub mod upstream;
