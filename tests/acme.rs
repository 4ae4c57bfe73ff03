//! Automatic HTTPS against a real ACME server (Let's Encrypt's Pebble): issuance over
//! HTTP-01 and over TLS-ALPN-01, chains that verify against Pebble's root, renewal under load with no
//! failed request and no restart, failures retried while the old certificate serves,
//! and a restart that serves the persisted certificate without the CA.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::pebble::Pebble;
use e2e::pki::{https_client, served_serial};
use e2e::*;

const NAME: &str = "shop.acme.test";

fn config(pebble: &Pebble, state: &std::path::Path, r: &Replica) -> String {
    TestConfig::plain_and_tls(state)
        .acme_retry("1s", "3s")
        .acme_site(&[NAME], pebble, "email = \"ops@acme.test\"")
        .pool("api", &[r])
        .route("/api", "api", "")
        .build()
}

/// Polls until the gateway serves a certificate for NAME that verifies against `root`.
async fn wait_for_valid_cert(gw: &Gateway, root: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let c = https_client(root, NAME, gw.tls);
    while Instant::now() < deadline {
        if let Ok(r) = c
            .get(format!("https://{NAME}:{}/api/whoami", gw.tls.port()))
            .send()
            .await
        {
            if r.status() == 200 {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread")]
async fn issues_over_http01_persists_and_serves_after_restart_without_the_ca() {
    let ports = Ports::fresh();
    let mut pebble = Pebble::start(ports.listen.port(), None, &[]);
    let r = Replica::start("r1");
    let state = tempfile::tempdir().unwrap();
    let cfg = config(&pebble, state.path(), &r);
    let gw = Gateway::start_at(&cfg, ports);
    let root = pebble.root_pem().await;
    assert!(
        wait_for_valid_cert(&gw, &root, Duration::from_secs(60)).await,
        "no valid certificate:\n{}",
        gw.log_text()
    );
    let log = gw.log_text();
    assert!(log.contains("\"event\":\"acme_order_succeeded\""), "{log}");
    let serial = served_serial(gw.tls, NAME).unwrap();

    // Persisted: key private, written whole.
    use std::os::unix::fs::PermissionsExt;
    let key = state.path().join(format!("acme/{NAME}/key.pem"));
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(
        std::fs::read_to_string(state.path().join(format!("acme/{NAME}/cert.pem")))
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
    let s = scrape(&gw).await;
    assert_eq!(
        sample(&s, "gateway_acme_orders_total", &[("result", "ok")]),
        1.0
    );
    assert!(
        sample(
            &s,
            "gateway_tls_certificate_expiry_timestamp_seconds",
            &[("name", NAME), ("source", "acme")]
        ) > 1.7e9
    );

    // Restart with the CA gone: the persisted certificate serves at once, no new order.
    drop(gw);
    pebble.stop();
    let gw = Gateway::start_at(&cfg, ports);
    assert_eq!(
        served_serial(gw.tls, NAME).unwrap(),
        serial,
        "same certificate, from disk"
    );
    assert!(wait_for_valid_cert(&gw, &root, Duration::from_secs(5)).await);
    assert!(
        !gw.log_text().contains("acme_order_started"),
        "the CA was not contacted"
    );
}

/// TLS-ALPN-01 with no plain listener at all (so HTTP-01 cannot be what passed), while
/// other HTTPS clients keep being served through the same listener during validation.
#[tokio::test(flavor = "multi_thread")]
async fn issues_over_tls_alpn01_on_the_https_listener_alone() {
    let ports = Ports::fresh();
    // Pebble validates on the gateway's only listener, which is HTTPS.
    let pebble = Pebble::start_on(free_port(), ports.listen.port(), None, &[]);
    let r = Replica::start("r1");
    let state = tempfile::tempdir().unwrap();
    let cfg = TestConfig::tls_only(state.path())
        .acme_retry("1s", "3s")
        .internal_site(&["localhost"], "")
        .acme_site(&[NAME], &pebble, "challenge = \"tls-alpn-01\"")
        .pool("api", &[&r])
        .route("/api", "api", "")
        .build();
    let gw = Gateway::start_at(&cfg, ports);
    let local_root =
        std::fs::read_to_string(state.path().join("internal/ca.pem")).expect("internal CA");

    // Ordinary HTTPS clients (a new handshake per request) all through the order.
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load = {
        let (done, ok, failed) = (done.clone(), ok.clone(), failed.clone());
        let c = https_client(&local_root, "localhost", gw.addr);
        let url = format!("https://localhost:{}/api/whoami", gw.addr.port());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                match c.get(&url).send().await {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        })
    };

    let root = pebble.root_pem().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let c = https_client(&root, NAME, gw.addr);
    let mut issued = false;
    while !issued && Instant::now() < deadline {
        issued = matches!(
            c.get(format!("https://{NAME}:{}/api/whoami", gw.addr.port()))
                .send()
                .await,
            Ok(r) if r.status() == 200
        );
        if !issued {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    done.store(true, Ordering::Relaxed);
    load.await.unwrap();
    let log = gw.log_text();
    assert!(issued, "no certificate over TLS-ALPN-01:\n{log}");
    assert!(
        log.contains("\"event\":\"acme_tls_alpn_answered\""),
        "the CA's validation handshake was answered by the gateway: {log}"
    );
    assert!(ok.load(Ordering::Relaxed) > 0);
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "HTTPS clients failed while the validation hook was active"
    );
    let served = e2e::pki::served_cert(gw.addr, NAME);
    assert!(served.contains(&format!("DNS:{NAME}")), "{served}");

    // Once the order is over, `acme-tls/1` is no longer answered.
    let out = std::process::Command::new("openssl")
        .args(["s_client", "-connect", &gw.addr.to_string()])
        .args(["-servername", NAME, "-alpn", "acme-tls/1"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!text.contains("ALPN protocol: acme-tls/1"), "{text}");
    assert!(text.contains("no application protocol"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn renews_short_lived_certificates_under_load_with_no_failed_request() {
    let ports = Ports::fresh();
    // 15-second certificates: renewed a third of their life before expiry.
    let pebble = Pebble::start(ports.listen.port(), Some(15), &[]);
    let r = Replica::start("r1");
    let state = tempfile::tempdir().unwrap();
    let gw = Gateway::start_at(&config(&pebble, state.path(), &r), ports);
    let root = pebble.root_pem().await;
    assert!(
        wait_for_valid_cert(&gw, &root, Duration::from_secs(60)).await,
        "{}",
        gw.log_text()
    );
    let first = served_serial(gw.tls, NAME).unwrap();

    // Load with a fresh TLS handshake per request while the certificate is replaced.
    let done = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let stop_at = Instant::now() + Duration::from_secs(20);
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let c = https_client(&root, NAME, gw.tls);
            let url = format!("https://{NAME}:{}/api/whoami", gw.tls.port());
            let (done, failures) = (done.clone(), failures.clone());
            tokio::spawn(async move {
                while Instant::now() < stop_at && done.load(Ordering::Relaxed) < 4000 {
                    match c.get(&url).send().await {
                        Ok(r) if r.status() == 200 => {}
                        other => {
                            eprintln!("failed: {other:?}");
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let mut renewed = None;
    while Instant::now() < stop_at {
        let now = served_serial(gw.tls, NAME).unwrap();
        if now != first {
            renewed = Some(now);
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for w in workers {
        w.await.unwrap();
    }
    assert!(
        renewed.is_some(),
        "the certificate was not renewed:\n{}",
        gw.log_text()
    );
    assert!(done.load(Ordering::Relaxed) > 20, "the load ran");
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "no request failed during renewal"
    );
    assert_eq!(gw.child.id(), gw.pid(), "same process: no restart");
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_are_retried_with_backoff_while_the_old_certificate_serves() {
    let ports = Ports::fresh();
    let mut pebble = Pebble::start(ports.listen.port(), Some(12), &[]);
    let r = Replica::start("r1");
    let state = tempfile::tempdir().unwrap();
    let gw = Gateway::start_at(&config(&pebble, state.path(), &r), ports);
    let root = pebble.root_pem().await;
    assert!(
        wait_for_valid_cert(&gw, &root, Duration::from_secs(60)).await,
        "{}",
        gw.log_text()
    );
    let serial = served_serial(gw.tls, NAME).unwrap();

    // The CA goes away: renewal attempts fail, back off, and the old certificate serves.
    pebble.stop();
    let failed = wait_until(Duration::from_secs(30), || {
        gw.log_text()
            .matches("\"event\":\"acme_order_failed\"")
            .count()
            >= 3
    });
    assert!(failed, "{}", gw.log_text());
    assert_eq!(
        served_serial(gw.tls, NAME).unwrap(),
        serial,
        "the old certificate keeps serving"
    );
    let waits: Vec<f64> = gw
        .log_text()
        .lines()
        .filter(|l| l.contains("acme_order_failed"))
        .filter_map(|l| {
            serde_json::from_str::<serde_json::Value>(l).ok()?["retry_in_secs"].as_f64()
        })
        .collect();
    assert!(
        waits[0] < waits[waits.len() - 1],
        "backoff grows: {waits:?}"
    );
    assert!(
        waits.iter().all(|w| *w <= 3.0 * 1.2 + 0.01),
        "capped at retry_max (+ jitter): {waits:?}"
    );

    // Back, and rejecting a third of nonces: orders still complete.
    let mut pebble = pebble;
    pebble.restart_with_env(&[("PEBBLE_WFE_NONCEREJECT", "30")]);
    let new_root = pebble.root_pem().await;
    let renewed = {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut ok = false;
        while Instant::now() < deadline {
            if served_serial(gw.tls, NAME).is_some_and(|s| s != serial) {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        ok
    };
    assert!(renewed, "{}", gw.log_text());
    assert!(wait_for_valid_cert(&gw, &new_root, Duration::from_secs(5)).await);
    let s = scrape(&gw).await;
    assert!(sample(&s, "gateway_acme_orders_total", &[("result", "error")]) >= 3.0);
}

/// The CA unreachable for the whole run: the gateway starts at once and serves every
/// other site and route; the ACME site's name alone has no certificate yet, and the
/// orders are retried with backoff.
#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_ca_does_not_stop_anything_else() {
    let r = Replica::start("r1");
    let state = tempfile::tempdir().unwrap();
    let dead_ca = format!("https://127.0.0.1:{}/dir", dead_port());
    let cfg = TestConfig::plain_and_tls(state.path())
        .acme_retry("200ms", "1s")
        .internal_site(&["localhost"], "redirect = \"off\"")
        .with(&format!(
            "[[sites]]\nnames = [\"{NAME}\"]\ncertificate = \"acme\"\nredirect = \"off\"\n\
             [sites.acme]\ndirectory = \"{dead_ca}\""
        ))
        .pool("api", &[&r])
        .route("/api", "api", "")
        .build();
    let gw = Gateway::start(&cfg);
    let local_root = std::fs::read_to_string(state.path().join("internal/ca.pem")).unwrap();
    let https = https_client(&local_root, "localhost", gw.tls);
    let plain = client();
    for _ in 0..20 {
        let a = https
            .get(format!("https://localhost:{}/api/whoami", gw.tls.port()))
            .send()
            .await
            .unwrap();
        assert_eq!(a.status(), 200);
        let b = plain.get(gw.url("/api/whoami")).send().await.unwrap();
        assert_eq!(b.status(), 200);
    }
    // Orders keep failing and are retried (at least twice within a few seconds).
    assert!(wait_until(Duration::from_secs(10), || gw
        .log_text()
        .matches("\"event\":\"acme_order_failed\"")
        .count()
        >= 2));
    // The ACME name alone fails its handshake: no other certificate is passed off as its.
    let acme_name = e2e::pki::served_cert(gw.tls, NAME);
    assert!(!acme_name.contains("localhost"), "{acme_name}");
    let s = scrape(&gw).await;
    assert!(sample(&s, "gateway_acme_orders_total", &[("result", "error")]) >= 2.0);
}
