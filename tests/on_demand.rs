//! On-demand TLS: certificates for names the config does not list, ordered from Pebble
//! at the first handshake for a name when the app's ask endpoint (upstream-api's
//! `/tls/allowed`, asked `?domain=NAME` as Caddy asks) allows it. A refused name fails
//! its handshake at once and is not asked about again for a while; a burst of
//! handshakes for one new name makes one ask and one order; an ask endpoint that hangs
//! or is down fails only that name, within its bound.
#![allow(clippy::unwrap_used)]

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use e2e::pebble::Pebble;
use e2e::pki::{https_client, served_serial};
use e2e::*;

/// The product's own name, in the file.
const APP: &str = "app.product.test";
const SHOP: &str = "shop.customer.test";
const BURST: &str = "burst.customer.test";
const SECOND: &str = "second.customer.test";
const EVIL: &str = "evil.other.test";

/// Pebble validating HTTP-01 on the gateway's plain port, accepting every nonce so its
/// log counts each order once.
fn pebble(ports: &Ports, validity_secs: Option<u64>) -> Pebble {
    Pebble::start(
        ports.listen.port(),
        validity_secs,
        &[("PEBBLE_WFE_NONCEREJECT", "0")],
    )
}

fn app_replica() -> Replica {
    let allowed = format!("{SHOP},{BURST},{SECOND}");
    Replica::start_on("r1", free_port(), &["--tls-allowed-domains", &allowed])
}

fn config(pebble: &Pebble, state: &std::path::Path, r: &Replica, on_demand: &str) -> String {
    TestConfig::plain_and_tls(state)
        .acme_retry("1s", "2s")
        .acme_site(&[APP], pebble, "")
        .with(&format!("[sites.on_demand]\n{on_demand}"))
        .pool("api", &[r])
        .route("/api", "api", "")
        .build()
}

fn ask_at(r: &Replica) -> String {
    format!("ask = \"http://{}/tls/allowed\"\n", r.addr)
}

/// How often the app was asked about `name`.
fn asks(r: &Replica, name: &str) -> usize {
    r.log_text()
        .lines()
        .filter(|l| l.contains("\"tls_ask\"") && l.contains(&format!("\"domain\":\"{name}\"")))
        .count()
}

/// One request over a fresh TLS connection for `name` to the HTTPS listener at `tls`:
/// its status, or the error.
async fn get(root: &str, name: &str, tls: SocketAddr) -> Result<u16, String> {
    https_client(root, name, tls)
        .get(format!("https://{name}:{}/api/whoami", tls.port()))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| format!("{e:?}"))
}

async fn decisions(gw: &Gateway, result: &str) -> f64 {
    sample(
        &scrape(gw).await,
        "gateway_tls_on_demand_total",
        &[("result", result)],
    )
}

async fn reload(gw: &Gateway) -> bool {
    client()
        .post(gw.admin_url("/reload"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

async fn started(pebble: &Pebble, gw: &Gateway, root: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while get(root, APP, gw.tls).await != Ok(200) {
        assert!(Instant::now() < deadline, "{}", gw.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(pebble.orders(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_allowed_name_is_issued_at_its_first_handshake_and_a_refused_one_fails_fast() {
    let ports = Ports::fresh();
    let pebble = pebble(&ports, None);
    let r = app_replica();
    let state = tempfile::tempdir().unwrap();
    let policy = format!("{}orders_per_minute = 1\n", ask_at(&r));
    let gw = Gateway::start_at(&config(&pebble, state.path(), &r, &policy), ports);
    let root = pebble.root_pem().await;
    started(&pebble, &gw, &root).await;

    // The first handshake for an allowed name waits for its order, then is served
    // with a certificate for exactly that name from the CA.
    assert_eq!(get(&root, SHOP, gw.tls).await, Ok(200), "{}", gw.log_text());
    let serial = served_serial(gw.tls, SHOP).unwrap();
    assert_ne!(Some(serial.clone()), served_serial(gw.tls, APP));
    assert_eq!(asks(&r, SHOP), 1);
    assert_eq!(pebble.orders(), 2);
    // And it is a site now: plain HTTP redirects to it.
    let redirect = raw_request(
        gw.addr,
        format!("GET /x HTTP/1.1\r\nHost: {SHOP}\r\nConnection: close\r\n\r\n").as_bytes(),
        Duration::from_secs(5),
    );
    assert!(redirect.starts_with("HTTP/1.1 308"), "{redirect}");

    // A name the app refuses: the handshake fails at once, and the refusal is kept.
    for _ in 0..3 {
        let t = Instant::now();
        assert!(get(&root, EVIL, gw.tls).await.is_err());
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }
    assert_eq!(asks(&r, EVIL), 1, "one ask, then the refusal is remembered");
    assert_eq!(decisions(&gw, "refused").await, 1.0);
    assert_eq!(decisions(&gw, "refused_cached").await, 2.0);
    assert_eq!(decisions(&gw, "allowed").await, 1.0);

    // Allowed too, but over orders_per_minute = 1: refused at once, no order.
    let t = Instant::now();
    assert!(get(&root, SECOND, gw.tls).await.is_err());
    assert!(t.elapsed() < Duration::from_secs(2));
    assert_eq!(decisions(&gw, "rate_limited").await, 1.0);
    let names = sample(&scrape(&gw).await, "gateway_tls_on_demand_names", &[]);
    assert_eq!(
        names, 1.0,
        "SHOP only: refused and limited names are not kept"
    );
    assert_eq!(pebble.orders(), 2);
    assert!(gw.log_text().contains("\"event\":\"on_demand_limited\""));
    // Other names never noticed.
    assert_eq!(get(&root, APP, gw.tls).await, Ok(200));
    drop(gw);

    // Kept: a restart serves the same certificate at the first handshake, with
    // neither an ask nor an order.
    let gw = Gateway::start(&config(&pebble, state.path(), &r, &policy));
    assert_eq!(get(&root, SHOP, gw.tls).await, Ok(200), "{}", gw.log_text());
    assert_eq!(served_serial(gw.tls, SHOP), Some(serial));
    assert_eq!(asks(&r, SHOP), 1);
    assert_eq!(decisions(&gw, "restored").await, 1.0);
    assert_eq!(pebble.orders(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_handshakes_for_one_new_name_make_one_ask_and_one_order() {
    let ports = Ports::fresh();
    let pebble = pebble(&ports, None);
    let r = app_replica();
    let state = tempfile::tempdir().unwrap();
    let gw = Gateway::start_at(&config(&pebble, state.path(), &r, &ask_at(&r)), ports);
    let root = pebble.root_pem().await;
    started(&pebble, &gw, &root).await;

    let burst: Vec<_> = (0..50)
        .map(|_| {
            let (root, tls) = (root.clone(), gw.tls);
            tokio::spawn(async move { get(&root, BURST, tls).await })
        })
        .collect();
    for b in burst {
        assert_eq!(b.await.unwrap(), Ok(200), "{}", gw.log_text());
    }
    assert_eq!(asks(&r, BURST), 1, "one ask for fifty handshakes");
    assert_eq!(pebble.orders(), 2, "one order for the name");
    let orders = sample(
        &scrape(&gw).await,
        "gateway_acme_orders_total",
        &[("result", "ok")],
    );
    assert_eq!(orders, 2.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ask_endpoint_that_hangs_or_is_down_fails_only_that_name_within_its_bound() {
    let ports = Ports::fresh();
    let pebble = pebble(&ports, None);
    let r = app_replica();
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let state = tempfile::tempdir().unwrap();
    let policy = format!(
        "ask = \"http://{}/tls/allowed\"\nask_timeout = \"1s\"\n",
        silent.local_addr().unwrap()
    );
    let gw = Gateway::start_at(&config(&pebble, state.path(), &r, &policy), ports);
    let root = pebble.root_pem().await;
    started(&pebble, &gw, &root).await;

    // The ask hangs: this handshake fails after ask_timeout, while the product's own
    // name is served meanwhile without waiting.
    let pending = {
        let (root, tls) = (root.clone(), gw.tls);
        tokio::spawn(async move {
            let t = Instant::now();
            (get(&root, SHOP, tls).await.is_err(), t.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = Instant::now();
    assert_eq!(get(&root, APP, gw.tls).await, Ok(200));
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    let (failed, took) = pending.await.unwrap();
    assert!(failed);
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!(decisions(&gw, "ask_error").await, 1.0);
    let log = gw.log_text();
    assert!(log.contains("\"event\":\"on_demand_ask_failed\""), "{log}");
    assert!(log.contains("no answer within 1s"), "{log}");
    drop(silent);

    // The endpoint is down: the handshake fails at once; not remembered as a refusal,
    // so the name works as soon as the app is back.
    let down = format!("ask = \"http://127.0.0.1:{}/tls/allowed\"\n", dead_port());
    gw.write_config(&config(&pebble, state.path(), &r, &down));
    assert!(reload(&gw).await, "{}", gw.log_text());
    let t = Instant::now();
    assert!(get(&root, SHOP, gw.tls).await.is_err());
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert_eq!(decisions(&gw, "ask_error").await, 2.0);
    gw.write_config(&config(&pebble, state.path(), &r, &ask_at(&r)));
    assert!(reload(&gw).await);
    assert_eq!(get(&root, SHOP, gw.tls).await, Ok(200), "{}", gw.log_text());
}

/// The CA is down: an allowed name's handshake fails as soon as its order does, and
/// while the order backs off (30 s here) past `handshake_wait` (20 s) the next ones fail
/// at once too, instead of waiting for nothing; the product's own names keep being
/// served.
#[tokio::test(flavor = "multi_thread")]
async fn a_failing_order_fails_its_handshake_at_once() {
    let r = app_replica();
    let state = tempfile::tempdir().unwrap();
    let cfg = TestConfig::plain_and_tls(state.path())
        .acme_retry("30s", "60s")
        .internal_site(&[APP], "")
        .with(&format!(
            "[[sites]]\nnames = [\"customers.product.test\"]\ncertificate = \"acme\"\n\
             [sites.acme]\ndirectory = \"https://127.0.0.1:{}/dir\"\n\
             [sites.on_demand]\n{}handshake_wait = \"20s\"\n",
            dead_port(),
            ask_at(&r)
        ))
        .pool("api", &[&r])
        .route("/api", "api", "")
        .build();
    let gw = Gateway::start(&cfg);
    let root = std::fs::read_to_string(state.path().join("internal/ca.pem")).unwrap();
    assert_eq!(get(&root, APP, gw.tls).await, Ok(200));
    for _ in 0..3 {
        let t = Instant::now();
        assert!(get(&root, SHOP, gw.tls).await.is_err());
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    }
    let log = gw.log_text();
    assert!(
        log.contains("the order for shop.customer.test failed"),
        "{log}"
    );
    assert_eq!(
        asks(&r, SHOP),
        1,
        "asked once, then kept while the order is retried"
    );
    assert_eq!(get(&root, APP, gw.tls).await, Ok(200));
}

/// Short-lived certificates: an on-demand name is renewed like any other while the app
/// allows it; once the app stops allowing it, its renewal asks, and it is neither
/// renewed nor served any more, nor kept for a restart.
#[tokio::test(flavor = "multi_thread")]
async fn on_demand_names_are_renewed_while_the_app_allows_them() {
    let ports = Ports::fresh();
    let pebble = pebble(&ports, Some(15));
    let mut r = app_replica();
    let state = tempfile::tempdir().unwrap();
    let gw = Gateway::start_at(&config(&pebble, state.path(), &r, &ask_at(&r)), ports);
    let root = pebble.root_pem().await;
    started(&pebble, &gw, &root).await;
    assert_eq!(get(&root, SHOP, gw.tls).await, Ok(200), "{}", gw.log_text());
    let first = served_serial(gw.tls, SHOP).unwrap();

    // Renewed a third of its 15 s life before expiry, asking the app first.
    let renewed = wait_until(Duration::from_secs(20), || {
        served_serial(gw.tls, SHOP).is_some_and(|s| s != first)
    });
    assert!(renewed, "{}", gw.log_text());
    assert_eq!(
        asks(&r, SHOP),
        2,
        "asked at issuance and before the renewal"
    );

    // The customer leaves: the app (same address) no longer lists the name.
    let addr = r.addr;
    r.kill9();
    drop(r);
    let r = Replica::start_on("r1", addr.port(), &["--tls-allowed-domains", BURST]);
    let dropped = wait_until(Duration::from_secs(20), || {
        gw.log_text().contains("\"event\":\"on_demand_dropped\"")
    });
    assert!(dropped, "{}", gw.log_text());
    assert_eq!(asks(&r, SHOP), 1, "the renewal asked");
    assert!(get(&root, SHOP, gw.tls).await.is_err(), "no longer served");
    assert!(
        !state.path().join(format!("acme/{SHOP}")).exists(),
        "not kept"
    );
    let names = sample(&scrape(&gw).await, "gateway_tls_on_demand_names", &[]);
    assert_eq!(names, 0.0);
    assert_eq!(get(&root, APP, gw.tls).await, Ok(200));
}

/// Two gateways sharing a store: the first issues a customer's name on demand; the
/// second, at its first handshake for the name, asks the app too but takes the
/// certificate from the store instead of ordering it again.
#[tokio::test(flavor = "multi_thread")]
async fn gateways_sharing_a_store_order_an_on_demand_name_once() {
    std::env::set_var(
        "E2E_ON_DEMAND_STORE_KEY",
        "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
    );
    let redis = e2e::redis::Redis::start();
    let store = format!(
        "[store]\nredis = \"{}\"\nencryption_key_env = \"E2E_ON_DEMAND_STORE_KEY\"\n",
        redis.url()
    );
    let ports = Ports::fresh();
    let pebble = pebble(&ports, None);
    let r = app_replica();
    let (sa, sb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let with_store =
        |state: &std::path::Path| format!("{}{store}", config(&pebble, state, &r, &ask_at(&r)));
    let a = Gateway::start_at(&with_store(sa.path()), ports);
    let root = pebble.root_pem().await;
    started(&pebble, &a, &root).await;
    assert_eq!(get(&root, SHOP, a.tls).await, Ok(200), "{}", a.log_text());
    let serial = served_serial(a.tls, SHOP).unwrap();

    let b = Gateway::start(&with_store(sb.path()));
    assert_eq!(get(&root, SHOP, b.tls).await, Ok(200), "{}", b.log_text());
    assert_eq!(served_serial(b.tls, SHOP), Some(serial));
    assert_eq!(asks(&r, SHOP), 2, "each gateway asked once");
    let orders = |gw: &Gateway| -> Vec<String> {
        gw.log_text()
            .lines()
            .filter(|l| l.contains("acme_order_started"))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        pebble.orders(),
        2,
        "the product's name and SHOP, once each; A: {:?}, B: {:?}",
        orders(&a),
        orders(&b)
    );
}

#[test]
fn check_names_on_demand_mistakes() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("g.toml");
    let head = "[[listeners]]\naddress = \"127.0.0.1:8080\"\n[[listeners]]\naddress = \"127.0.0.1:8443\"\ntls = true\n[pools.p]\nreplicas = [\"x:1\"]\n[[routes]]\npool = \"p\"\n";
    let acme = "certificate = \"acme\"\n[sites.acme]\ndirectory = \"https://acme.example/dir\"\n";
    let run = |text: &str| {
        std::fs::write(&f, text).unwrap();
        let (ok, _, err) = gateway_check(&f, &[]);
        (ok, err)
    };
    let (ok, err) = run(&format!(
        "{head}[[sites]]\nnames = [\"a.example\"]\ncertificate = \"internal\"\n[sites.on_demand]\nask = \"http://api:8000/tls/allowed\"\n"
    ));
    assert!(!ok);
    assert!(
        err.contains("sites[0].on_demand: on-demand certificates come from ACME"),
        "{err}"
    );
    let (ok, err) = run(&format!(
        "{head}[[sites]]\nnames = [\"a.example\"]\n{acme}[sites.on_demand]\nask = \"api:8000/tls\"\norders_per_minute = 0\n\
         [[sites]]\nnames = [\"b.example\"]\n{acme}[sites.on_demand]\nask = \"http://api:8000/tls/allowed\"\n"
    ));
    assert!(!ok);
    assert!(
        err.contains("sites[0].on_demand.ask: invalid ask URL \"api:8000/tls\""),
        "{err}"
    );
    assert!(
        err.contains("sites[0].on_demand.orders_per_minute: must be at least 1"),
        "{err}"
    );
    assert!(
        err.contains("sites[1].on_demand: only one site may issue on demand"),
        "{err}"
    );
    let (ok, err) = run(&format!(
        "{head}[[sites]]\nnames = [\"a.example\"]\n{acme}[sites.on_demand]\nask = \"http://api:8000/tls/allowed\"\n"
    ));
    assert!(ok, "{err}");
}
