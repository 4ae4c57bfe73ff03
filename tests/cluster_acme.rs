//! Several gateways, one certificate: the ACME account, certificates and keys kept in
//! a real redis-server (keys sealed), one order per name across the gateways (a lock
//! with a fencing token), challenges any gateway can answer, and a new certificate
//! served by every gateway as soon as one has it.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::pebble::Pebble;
use e2e::pki::{https_client, served_serial};
use e2e::redis::Redis;
use e2e::*;

const NAME: &str = "shop.cluster.test";
/// Pebble environment that accepts every nonce, so its log counts each order once.
const EVERY_NONCE: &[(&str, &str)] = &[("PEBBLE_WFE_NONCEREJECT", "0")];
/// The variable each gateway reads its store encryption key from.
const KEY_VAR: &str = "E2E_CLUSTER_STORE_KEY";

fn store(redis: &Redis) -> String {
    format!(
        "[store]\nredis = \"{}\"\nencryption_key_env = \"{KEY_VAR}\"\n",
        redis.url()
    )
}

fn with_site(redis: &Redis, pebble: &Pebble, r: &Replica, state: &std::path::Path) -> String {
    with_site_as(redis, pebble, r, state, "")
}

/// [`with_site`] with more keys for the ACME site (its `challenge`).
fn with_site_as(
    redis: &Redis,
    pebble: &Pebble,
    r: &Replica,
    state: &std::path::Path,
    site: &str,
) -> String {
    TestConfig::plain_and_tls(state)
        .acme_retry("1s", "3s")
        .acme_site(&[NAME], pebble, site)
        .with(&store(redis))
        .pool("api", &[r])
        .route("/api", "api", "")
        .build()
}

/// A gateway of the cluster with no ACME site: only the local CA's `localhost`.
fn without_site(redis: &Redis, r: &Replica, state: &std::path::Path) -> String {
    TestConfig::plain_and_tls(state)
        .internal_site(&["localhost"], "")
        .with(&store(redis))
        .pool("api", &[r])
        .route("/api", "api", "")
        .build()
}

async fn serves_valid_cert(gw: &Gateway, root: &str, within: Duration) -> bool {
    let c = https_client(root, NAME, gw.tls);
    let url = format!("https://{NAME}:{}/api/whoami", gw.tls.port());
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if c.get(&url).send().await.is_ok_and(|r| r.status() == 200) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

async fn orders_ok(gw: &Gateway) -> f64 {
    sample(
        &scrape(gw).await,
        "gateway_acme_orders_total",
        &[("result", "ok")],
    )
}

fn set_store_key() {
    // 32 bytes in base64 (what `openssl rand -base64 32` prints). Read by the gateway
    // processes this test starts, which inherit its environment.
    std::env::set_var(KEY_VAR, "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=");
}

/// A is the only gateway the CA's HTTP-01 requests reach, and starts without the site;
/// B and C start their orders, one of them gets the lock, and A answers the token it
/// published. A then takes the site by reload and serves the same certificate without
/// an order of its own; a gateway restarted empty gets it from the store; garbage in
/// the store is an error for that key, and the next order replaces it.
#[tokio::test(flavor = "multi_thread")]
async fn one_order_per_name_served_by_every_gateway() {
    set_store_key();
    let redis = Redis::start();
    let ports_a = Ports::fresh();
    // Pebble refuses 5% of nonces by default, and a refused POST /order-plz is sent
    // again: counting orders in its log needs every nonce taken (refusals have their
    // own test in acme.rs).
    let pebble = Pebble::start(ports_a.listen.port(), None, EVERY_NONCE);
    let r = Replica::start("r1");
    let states: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();

    let a = Gateway::start_at(&without_site(&redis, &r, states[0].path()), ports_a);
    let b = Gateway::start(&with_site(&redis, &pebble, &r, states[1].path()));
    let c = Gateway::start(&with_site(&redis, &pebble, &r, states[2].path()));
    let root = pebble.root_pem().await;
    for gw in [&b, &c] {
        assert!(
            serves_valid_cert(gw, &root, Duration::from_secs(60)).await,
            "{}",
            gw.log_text()
        );
    }
    assert_eq!(orders_ok(&b).await + orders_ok(&c).await, 1.0, "one order");
    let serial = served_serial(b.tls, NAME).unwrap();
    assert_eq!(served_serial(c.tls, NAME).as_deref(), Some(serial.as_str()));
    assert_eq!(pebble.orders(), 1, "Pebble saw one order for {NAME}");

    // A answered the validation: a request for the token reached it, not B or C.
    assert!(
        a.log_text().contains("/.well-known/acme-challenge/"),
        "the CA validated through A: {}",
        a.log_text()
    );

    // A takes the site by reload: the store's certificate, no order.
    a.write_config(&with_site(&redis, &pebble, &r, states[0].path()));
    let out = std::process::Command::new(bin("gateway"))
        .args(["reload", "--admin", &a.admin.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        serves_valid_cert(&a, &root, Duration::from_secs(15)).await,
        "{}",
        a.log_text()
    );
    assert_eq!(served_serial(a.tls, NAME).as_deref(), Some(serial.as_str()));
    assert_eq!(orders_ok(&a).await, 0.0);
    assert!(a.log_text().contains("\"certificate_from_store\""));

    // The key and the account are sealed in the store.
    let cert = redis.cli(&["GET", &format!("gateway:cert:{NAME}")]);
    assert!(cert.contains("\"key\":\"enc:v1:"), "{cert}");
    assert!(!cert.contains("PRIVATE KEY"), "{cert}");
    let accounts = redis.cli(&["KEYS", "gateway:acme:account:*"]);
    let account = redis.cli(&["GET", accounts.lines().next().unwrap()]);
    assert!(account.starts_with("enc:v1:"), "{account}");

    // A gateway restarted with nothing on disk serves the certificate from the store.
    drop(b);
    let b = Gateway::start(&with_site(&redis, &pebble, &r, states[3].path()));
    assert!(
        serves_valid_cert(&b, &root, Duration::from_secs(15)).await,
        "{}",
        b.log_text()
    );
    assert_eq!(served_serial(b.tls, NAME).as_deref(), Some(serial.as_str()));
    assert_eq!(orders_ok(&b).await, 0.0, "nothing issued again");

    // Garbage under the certificate's key: an error naming the key, no crash; the
    // next gateway without a certificate orders one and the store is whole again.
    redis.cli(&["SET", &format!("gateway:cert:{NAME}"), "garbage"]);
    drop(c);
    let fresh = tempfile::tempdir().unwrap();
    let c = Gateway::start(&with_site(&redis, &pebble, &r, fresh.path()));
    assert!(
        serves_valid_cert(&c, &root, Duration::from_secs(60)).await,
        "{}",
        c.log_text()
    );
    let log = c.log_text();
    assert!(
        log.contains("certificate_store_read_failed")
            && log.contains(&format!("gateway:cert:{NAME}")),
        "{log}"
    );
    assert_eq!(orders_ok(&c).await, 1.0);
    // B, whose certificate came from the store while its first attempt was under
    // way, never ordered one of its own (that attempt once went on to the lock).
    assert_eq!(orders_ok(&b).await, 0.0, "B ordered: {}", b.log_text());
    assert_eq!(pebble.orders(), 2, "the first order and C's");
    assert!(redis
        .cli(&["GET", &format!("gateway:cert:{NAME}")])
        .contains("enc:v1:"));
    assert!(a.child.id() > 0 && a.pid() == a.child.id(), "A still runs");
}

/// Short-lived certificates renewed under load across three gateways: no failed
/// request anywhere, and the renewals are ordered once each, not once per gateway.
#[tokio::test(flavor = "multi_thread")]
async fn renewals_under_load_are_ordered_once_for_all() {
    set_store_key();
    let redis = Redis::start();
    let ports_a = Ports::fresh();
    // 15-second certificates, renewed a third of their life before expiry.
    let pebble = Pebble::start(ports_a.listen.port(), Some(15), EVERY_NONCE);
    let r = Replica::start("r1");
    let states: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = Gateway::start_at(&with_site(&redis, &pebble, &r, states[0].path()), ports_a);
    let b = Gateway::start(&with_site(&redis, &pebble, &r, states[1].path()));
    let c = Gateway::start(&with_site(&redis, &pebble, &r, states[2].path()));
    let root = pebble.root_pem().await;
    for gw in [&a, &b, &c] {
        assert!(
            serves_valid_cert(gw, &root, Duration::from_secs(60)).await,
            "{}",
            gw.log_text()
        );
    }
    let first = served_serial(a.tls, NAME).unwrap();

    let failures = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let stop_at = Instant::now() + Duration::from_secs(25);
    let workers: Vec<_> = [&a, &b, &c]
        .iter()
        .map(|gw| {
            let client = https_client(&root, NAME, gw.tls);
            let url = format!("https://{NAME}:{}/api/whoami", gw.tls.port());
            let (failures, done) = (failures.clone(), done.clone());
            tokio::spawn(async move {
                while Instant::now() < stop_at {
                    match client.get(&url).send().await {
                        Ok(r) if r.status() == 200 => {}
                        other => {
                            eprintln!("failed: {other:?}");
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    assert!(done.load(Ordering::Relaxed) > 100);
    assert_eq!(failures.load(Ordering::Relaxed), 0, "no request failed");
    let serials: Vec<String> = [&a, &b, &c]
        .iter()
        .map(|gw| served_serial(gw.tls, NAME).unwrap())
        .collect();
    assert!(serials[0] != first, "renewed:\n{}", a.log_text());
    // A renewal may be in flight as the load stops (one starts every ~10 s): poll until
    // the CA's count and the gateways' settle, rather than compare mid-order.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (orders, pebble_orders) = loop {
        let orders = orders_ok(&a).await + orders_ok(&b).await + orders_ok(&c).await;
        let pebble_orders = pebble.orders() as f64;
        if orders == pebble_orders || Instant::now() > deadline {
            break (orders, pebble_orders);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("renewals: {orders} orders, Pebble saw {pebble_orders}");
    assert_eq!(orders, pebble_orders, "every order the CA saw succeeded");
    // One certificate at start and one per ~10 s renewal round: far fewer than three
    // gateways ordering each on their own (3 per round).
    assert!(
        orders <= 5.0,
        "{orders} orders in ~35 s: the gateways ordered on their own"
    );
}

/// TLS-ALPN-01 across the cluster: the CA's validation handshakes reach only A, which
/// has no ACME site of its own; B orders, and A answers with the challenge certificate
/// B published through the store. One order, and both serve the result.
#[tokio::test(flavor = "multi_thread")]
async fn a_tls_alpn_challenge_is_answered_by_a_gateway_that_did_not_order() {
    set_store_key();
    let redis = Redis::start();
    let ports_a = Ports::fresh();
    // Pebble validates TLS-ALPN-01 on A's HTTPS port; its HTTP-01 port is no listener.
    let pebble = Pebble::start_on(free_port(), ports_a.tls.port(), None, EVERY_NONCE);
    let r = Replica::start("r1");
    let states: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = Gateway::start_at(&without_site(&redis, &r, states[0].path()), ports_a);
    let b = Gateway::start(&with_site_as(
        &redis,
        &pebble,
        &r,
        states[1].path(),
        "challenge = \"tls-alpn-01\"",
    ));
    let root = pebble.root_pem().await;
    assert!(
        serves_valid_cert(&b, &root, Duration::from_secs(60)).await,
        "B:\n{}\nA:\n{}",
        b.log_text(),
        a.log_text()
    );
    assert!(
        a.log_text()
            .contains("\"event\":\"acme_tls_alpn_answered\""),
        "the CA's handshake was answered by A: {}",
        a.log_text()
    );
    assert!(
        !b.log_text()
            .contains("\"event\":\"acme_tls_alpn_answered\""),
        "B was never asked"
    );
    assert_eq!(orders_ok(&b).await, 1.0);
    assert_eq!(orders_ok(&a).await, 0.0);
    // Once the order is done the challenge is withdrawn everywhere: A's HTTPS listener
    // no longer offers the acme-tls/1 protocol for the name.
    let offers_challenge = || {
        let out = std::process::Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &a.tls.to_string(),
                "-servername",
                NAME,
            ])
            .args(["-alpn", "acme-tls/1"])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains("ALPN protocol: acme-tls/1")
    };
    assert!(
        wait_until(Duration::from_secs(10), || !offers_challenge()),
        "the challenge was not withdrawn from A"
    );
}
