//! The floor under the gateway, for bench/: a bare Pingora proxy as the issue that set
//! the performance goals measured it (round robin over the upstreams with keep-alive,
//! the same response headers, a v4 UUID request id, nothing else), built with the
//! gateway's release profile and allocator. Not part of the product.
//!
//! Usage: `bare_pingora [--tls LISTEN CERT KEY] LISTEN UPSTREAM...`, e.g.
//! `bare_pingora --tls 127.0.0.1:9602 cert.pem key.pem 127.0.0.1:9601 127.0.0.1:9101 ...`
//! (as bench/ runs it). The TLS listener is Pingora's own with its defaults (rustls, h2
//! and HTTP/1.1 by ALPN, Pingora's L4 buffers): the floor on the HTTPS and HTTP/2 paths.

use std::sync::Arc;

use async_trait::async_trait;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::Server;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorType, Result};
use pingora_http::ResponseHeader;
use pingora_load_balancing::{selection::RoundRobin, LoadBalancer};
use pingora_proxy::{ProxyHttp, Session};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Bare(Arc<LoadBalancer<RoundRobin>>);

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();
    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _: &mut Session, _: &mut ()) -> Result<Box<HttpPeer>> {
        let upstream = self
            .0
            .select(b"", 256)
            .ok_or_else(|| Error::new(ErrorType::ConnectNoRoute))?;
        Ok(Box::new(HttpPeer::new(upstream, false, String::new())))
    }

    async fn response_filter(
        &self,
        _: &mut Session,
        resp: &mut ResponseHeader,
        _: &mut (),
    ) -> Result<()> {
        resp.insert_header("X-Content-Type-Options", "nosniff")?;
        resp.insert_header("X-Frame-Options", "DENY")?;
        resp.insert_header("Referrer-Policy", "strict-origin-when-cross-origin")?;
        resp.insert_header("X-Request-ID", uuid::Uuid::new_v4().to_string())?;
        Ok(())
    }
}

fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    const USAGE: &str = "usage: bare_pingora [--tls LISTEN CERT KEY] LISTEN UPSTREAM...";
    let mut args = std::env::args().skip(1).peekable();
    let tls = if args.peek().map(String::as_str) == Some("--tls") {
        args.next();
        let mut next = || args.next().ok_or(USAGE);
        Some((next()?, next()?, next()?))
    } else {
        None
    };
    let listen = args.next().ok_or(USAGE)?;
    let upstreams: Vec<String> = args.collect();
    if upstreams.is_empty() {
        return Err(USAGE.into());
    }
    // One worker thread, as every proxy in bench/ runs.
    let conf = ServerConf {
        threads: 1,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None::<Opt>, conf);
    server.bootstrap();
    let lb = LoadBalancer::try_from_iter(upstreams)?;
    let mut proxy = pingora_proxy::http_proxy_service(&server.configuration, Bare(Arc::new(lb)));
    proxy.add_tcp(&listen);
    if let Some((addr, cert, key)) = tls {
        let mut settings = pingora_core::listeners::tls::TlsSettings::intermediate(&cert, &key)?;
        settings.enable_h2();
        proxy.add_tls_with_settings(&addr, None, settings);
    }
    server.add_service(proxy);
    server.run_forever()
}
