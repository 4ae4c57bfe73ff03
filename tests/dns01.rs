//! Wildcard certificates over DNS-01: the gateway writes the challenge's TXT record
//! into a real BIND 9 with a TSIG-signed RFC 2136 update, waits until BIND serves it,
//! and Pebble, resolving through that BIND, validates it; the record is removed after
//! the order, also after a failed one. A wrong secret, a server that does not answer
//! and a record that never shows are each a bounded, named failure that leaves the
//! certificate in service and every other name alone.
#![allow(clippy::unwrap_used)]

use std::net::TcpListener;
use std::time::{Duration, Instant};

use e2e::bind::{Bind, KEY_NAME};
use e2e::pebble::Pebble;
use e2e::pki::{https_client, served_serial};
use e2e::*;

const ZONE: &str = "wild.test";
const RECORD: &str = "_acme-challenge.wild.test";
/// The environment variables the gateways read TSIG secrets from.
const GOOD: &str = "E2E_TSIG_SECRET";
const WRONG: &str = "E2E_TSIG_WRONG";

/// Pebble, started to resolve every name (and read TXT records) through `bind`,
/// accepting every nonce so order counts are exact, and validating every order afresh
/// (by default it reuses half of the valid authorizations, so an order could succeed
/// without touching DNS at all).
fn pebble_on(bind: &Bind, ports: &Ports, validity: Option<u64>) -> Pebble {
    let mut p = Pebble::start(
        ports.listen.port(),
        validity,
        &[("PEBBLE_WFE_NONCEREJECT", "0"), ("PEBBLE_AUTHZREUSE", "0")],
    );
    p.resolve_with(bind.addr);
    p
}

/// A gateway config with the apex and wildcard of ZONE over DNS-01 (`dns`: the
/// `[dns]` section) and `other.test` from the local CA.
fn config(pebble: &Pebble, state: &std::path::Path, r: &Replica, dns: &str, acme: &str) -> String {
    TestConfig::plain_and_tls(state)
        .acme_retry("1s", "2s")
        .acme_site(
            &[ZONE, "*.wild.test"],
            pebble,
            &format!("challenge = \"dns-01\"\n{acme}"),
        )
        .internal_site(&["other.test"], "")
        .pool("api", &[r])
        .route("/api", "api", "")
        .with(dns)
        .build()
}

/// Polls until `name` is served a certificate that verifies against `root`.
async fn serves(gw: &Gateway, root: &str, name: &str, within: Duration) -> bool {
    let c = https_client(root, name, gw.tls);
    let url = format!("https://{name}:{}/api/whoami", gw.tls.port());
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if matches!(c.get(&url).send().await, Ok(r) if r.status() == 200) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

async fn dns_updates(gw: &Gateway, op: &str, result: &str) -> f64 {
    sample(
        &scrape(gw).await,
        "gateway_dns_updates_total",
        &[("op", op), ("result", result)],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wildcard_is_issued_through_bind_and_served_for_every_subdomain() {
    let bind = Bind::start(ZONE);
    std::env::set_var(GOOD, &bind.secret);
    let ports = Ports::fresh();
    let pebble = pebble_on(&bind, &ports, None);
    let r = Replica::start("r1");
    let state = tempfile::tempdir().unwrap();
    let cfg = config(&pebble, state.path(), &r, &bind.dns_section(GOOD), "");
    let gw = Gateway::start_at(&cfg, ports);
    let root = pebble.root_pem().await;
    assert!(
        serves(&gw, &root, "a.wild.test", Duration::from_secs(60)).await,
        "{}\n{}",
        gw.log_text(),
        bind.log_text()
    );
    // One certificate for the apex and any subdomain.
    let serial = served_serial(gw.tls, "a.wild.test").unwrap();
    for name in ["shop.wild.test", ZONE] {
        assert!(serves(&gw, &root, name, Duration::from_secs(5)).await);
        assert_eq!(
            served_serial(gw.tls, name).as_deref(),
            Some(serial.as_str())
        );
    }
    // BIND took both records (apex and wildcard each have their own value at the
    // same name) under our key, and holds none of them once the order is done.
    let log = bind.log_text();
    assert_eq!(
        log.matches(&format!(
            "{KEY_NAME}: updating zone '{ZONE}/IN': adding an RR at '{RECORD}' TXT"
        ))
        .count(),
        2,
        "{log}"
    );
    assert!(
        wait_until(Duration::from_secs(5), || bind.txt(RECORD).is_empty()),
        "left behind: {:?}",
        bind.txt(RECORD)
    );
    assert_eq!(dns_updates(&gw, "add", "ok").await, 2.0);
    assert_eq!(dns_updates(&gw, "remove", "ok").await, 2.0);
    assert_eq!(pebble.orders(), 1, "one order");
    assert!(
        std::fs::read_to_string(&pebble.log)
            .unwrap()
            .contains("POST /chalZ"),
        "the CA was told to validate"
    );
    // The local-CA site was served all along, by the same listener.
    assert!(served_serial(gw.tls, "other.test").is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_tsig_secret_is_named_and_the_certificate_in_service_stays() {
    let bind = Bind::start(ZONE);
    std::env::set_var(GOOD, &bind.secret);
    // Well-formed, but not the key BIND knows.
    std::env::set_var(WRONG, "c29tZXRoaW5nIGVsc2UgZW50aXJlbHkgMzIgYnl0ZXM=");
    let ports = Ports::fresh();
    let pebble = pebble_on(&bind, &ports, None);
    let r = Replica::start("r1");
    let state = tempfile::tempdir().unwrap();
    let gw = Gateway::start_at(
        &config(&pebble, state.path(), &r, &bind.dns_section(GOOD), ""),
        ports,
    );
    let root = pebble.root_pem().await;
    assert!(serves(&gw, &root, "a.wild.test", Duration::from_secs(60)).await);
    let serial = served_serial(gw.tls, "a.wild.test").unwrap();
    drop(gw);

    // The same state, the wrong secret, and a renewal due at once.
    let gw = Gateway::start(&config(
        &pebble,
        state.path(),
        &r,
        &bind.dns_section(WRONG),
        "renew_before = \"100000d\"",
    ));
    let failed = wait_until(Duration::from_secs(20), || {
        gw.log_text().contains("\"event\":\"acme_order_failed\"")
    });
    assert!(failed, "{}", gw.log_text());
    let log = gw.log_text();
    assert!(
        log.contains(&format!(
            "does not accept the signature of TSIG key {KEY_NAME}"
        )),
        "{log}"
    );
    assert!(!log.contains(&bind.secret) && !log.contains("c29tZXRoaW5n"));
    assert!(dns_updates(&gw, "add", "error").await >= 1.0);
    assert_eq!(dns_updates(&gw, "add", "ok").await, 0.0);
    // The persisted certificate keeps serving; BIND's zone is untouched.
    assert!(serves(&gw, &root, "b.wild.test", Duration::from_secs(5)).await);
    assert_eq!(served_serial(gw.tls, "b.wild.test"), Some(serial));
    assert!(bind.txt(RECORD).is_empty());
    assert!(
        bind.log_text().contains("request has invalid signature"),
        "{}",
        bind.log_text()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_server_or_a_record_that_never_shows_is_a_bounded_named_failure() {
    let bind = Bind::start(ZONE);
    std::env::set_var(GOOD, &bind.secret);
    let r = Replica::start("r1");

    // A server that takes the connection and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let ports = Ports::fresh();
    let pebble = pebble_on(&bind, &ports, None);
    let state = tempfile::tempdir().unwrap();
    let dns = format!(
        "[dns]\nserver = \"{silent_addr}\"\nzone = \"{ZONE}\"\ntsig_key = \"{KEY_NAME}\"\n\
         tsig_secret_env = \"{GOOD}\"\ntimeout = \"1s\"\n"
    );
    let started = Instant::now();
    let gw = Gateway::start_at(&config(&pebble, state.path(), &r, &dns, ""), ports);
    let failed = wait_until(Duration::from_secs(15), || {
        gw.log_text().contains("\"event\":\"acme_order_failed\"")
    });
    assert!(failed, "{}", gw.log_text());
    assert!(started.elapsed() < Duration::from_secs(10));
    let log = gw.log_text();
    assert!(
        log.contains(&format!(
            "DNS update (add {RECORD}) at {silent_addr}: no answer within 1s"
        )),
        "{log}"
    );
    assert!(dns_updates(&gw, "add", "error").await >= 1.0);
    // Other names are served meanwhile.
    let internal = served_serial(gw.tls, "other.test");
    assert!(internal.is_some());
    drop(gw);
    drop(silent);

    // The update lands, but the server the record is checked at never has it: the
    // wait ends at propagation_timeout and the record is taken out again.
    let ports = Ports::fresh();
    let pebble = pebble_on(&bind, &ports, None);
    let state = tempfile::tempdir().unwrap();
    let elsewhere = format!("127.0.0.1:{}", dead_port());
    let dns = format!(
        "{}check_servers = [\"{elsewhere}\"]\npropagation_timeout = \"2s\"\ntimeout = \"1s\"\n",
        bind.dns_section(GOOD)
    );
    let gw = Gateway::start_at(&config(&pebble, state.path(), &r, &dns, ""), ports);
    let failed = wait_until(Duration::from_secs(15), || {
        gw.log_text().contains("\"event\":\"acme_order_failed\"")
    });
    assert!(failed, "{}", gw.log_text());
    let log = gw.log_text();
    assert!(
        log.contains(&format!(
            "the TXT record {RECORD} did not appear at {elsewhere} within 2s"
        )),
        "{log}"
    );
    assert!(dns_updates(&gw, "add", "ok").await >= 1.0);
    assert!(dns_updates(&gw, "remove", "ok").await >= 1.0);
    assert!(
        wait_until(Duration::from_secs(5), || bind.txt(RECORD).is_empty()),
        "left behind after a failed order: {:?}",
        bind.txt(RECORD)
    );
    // No order reached the CA's validation: it was never told.
    let pebble_log = std::fs::read_to_string(&pebble.log).unwrap();
    assert!(!pebble_log.contains("POST /chalZ"), "{pebble_log}");
    drop(gw);

    // A zone the server does not hold: its refusal is named, and nothing is added.
    let ports = Ports::fresh();
    let pebble = pebble_on(&bind, &ports, None);
    let state = tempfile::tempdir().unwrap();
    let dns = bind
        .dns_section(GOOD)
        .replace(&format!("zone = \"{ZONE}\""), "zone = \"elsewhere.test\"");
    let cfg = TestConfig::plain_and_tls(state.path())
        .acme_retry("1s", "2s")
        .acme_site(&["*.elsewhere.test"], &pebble, "challenge = \"dns-01\"")
        .internal_site(&["other.test"], "")
        .pool("api", &[&r])
        .route("/api", "api", "")
        .with(&dns)
        .build();
    let gw = Gateway::start_at(&cfg, ports);
    let failed = wait_until(Duration::from_secs(15), || {
        gw.log_text().contains("\"event\":\"acme_order_failed\"")
    });
    assert!(failed, "{}", gw.log_text());
    let log = gw.log_text();
    assert!(
        log.contains("the server is not authoritative for elsewhere.test"),
        "{log}"
    );
    assert!(dns_updates(&gw, "add", "error").await >= 1.0);
    assert!(served_serial(gw.tls, "other.test").is_some());
}

#[test]
fn check_names_dns01_mistakes() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("g.toml");
    let head = "[[listeners]]\naddress = \"127.0.0.1:8443\"\ntls = true\n[pools.p]\nreplicas = [\"x:1\"]\n[[routes]]\npool = \"p\"\n";
    let site = |names: &str, challenge: &str| {
        format!("[[sites]]\nnames = {names}\ncertificate = \"acme\"\n[sites.acme]\ndirectory = \"https://acme.example/dir\"\nchallenge = \"{challenge}\"\n")
    };
    let run = |text: &str| {
        std::fs::write(&f, text).unwrap();
        // E2E_TSIG_UNSET is never set.
        let (ok, _, err) = gateway_check(&f, &[("E2E_TSIG_SET", "c2VjcmV0")]);
        (ok, err)
    };
    let dns = |extra: &str| {
        format!("[dns]\nserver = \"ns1.example.com\"\nzone = \"example.com\"\ntsig_key = \"k\"\ntsig_secret_env = \"E2E_TSIG_SET\"\n{extra}")
    };

    // DNS-01 without [dns]; a wildcard over HTTP-01.
    let (ok, err) = run(&format!("{head}{}", site("[\"*.example.com\"]", "dns-01")));
    assert!(!ok);
    assert!(
        err.contains("sites[0].acme.challenge: DNS-01 needs a [dns] section"),
        "{err}"
    );
    let (ok, err) = run(&format!("{head}{}", site("[\"*.example.com\"]", "http-01")));
    assert!(!ok);
    assert!(
        err.contains("*.example.com: wildcard names need the DNS-01 challenge"),
        "{err}"
    );

    // A name outside the zone; a secret that is not there; an algorithm we refuse.
    let (ok, err) = run(&format!(
        "{head}{}{}",
        site("[\"example.com\", \"*.example.org\"]", "dns-01"),
        dns("tsig_algorithm = \"hmac-md5\"\n")
    ));
    assert!(!ok);
    assert!(
        err.contains("*.example.org is not in the zone example.com"),
        "{err}"
    );
    assert!(
        err.contains("dns.tsig_algorithm: unsupported TSIG algorithm \"hmac-md5\""),
        "{err}"
    );
    let text = format!("{head}{}{}", site("[\"*.example.com\"]", "dns-01"), dns(""));
    let (ok, err) = run(&text.replace("E2E_TSIG_SET", "E2E_TSIG_UNSET"));
    assert!(!ok);
    assert!(
        err.contains("dns.tsig_secret_env: the environment variable E2E_TSIG_UNSET is not set"),
        "{err}"
    );
    let (ok, err) = run(&text.replace("ns1.example.com", "ns1 example"));
    assert!(!ok);
    assert!(err.contains("dns.server: invalid DNS server"), "{err}");

    // And the right one passes.
    let (ok, err) = run(&text);
    assert!(ok, "{err}");
}
