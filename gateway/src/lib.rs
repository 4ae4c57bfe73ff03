//! An edge gateway on Pingora. One request, in order, through these modules:
//!
//! | phase (pingora `ProxyHttp`) | what happens                                   | module            |
//! |-----------------------------|------------------------------------------------|-------------------|
//! | listener                    | TCP accept; TLS (SNI certificate; TLS-ALPN-01) | `app`, `tls::store`, `tls::alpn` |
//! | connection                  | per-client cap, request-head deadline          | `downstream`      |
//! | `new_ctx`                   | pin the current config snapshot                | `proxy::ctx`      |
//! | `request_filter`            | request id, client address, route lookup       | `request_id`, `headers`, `routing` |
//! |                             | admission: policy, limits, rate limits         | `proxy::admit`    |
//! |                             | read the body before forwarding (buffering)    | `proxy::body`     |
//! | `request_body_filter`       | body size limit; the read-ahead body goes out  | `proxy::body`     |
//! | `upstream_peer`             | pick a healthy replica round-robin             | `upstream::pool`  |
//! | `upstream_request_filter`   | X-Forwarded-*, request id, hop-by-hop, prefix  | `headers`         |
//! | `fail_to_connect` / `error_while_proxy` | decide a retry on another replica | `proxy`           |
//! | `response_filter`           | request id on the response, hop-by-hop         | `headers`         |
//! | `fail_to_proxy`             | gateway-made JSON errors (404/502/503/504)     | `proxy::respond`  |
//! | `logging`                   | one JSON access-log line                       | `telemetry`, `access_line` |
//!
//! Beside the request path: `config` (TOML -> typed `Config`), `state` (the swappable
//! `Snapshot`), `upstream::health` (active health checks), `cli` and `app` (wiring).

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod access_line;
pub mod admin;
pub mod app;
pub mod cli;
pub mod client;
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
pub mod telemetry;
pub mod tls;
pub mod upstream;
