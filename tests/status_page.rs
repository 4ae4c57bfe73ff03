//! The status page on the admin listener, in a real headless Chromium: it shows the
//! routes and replicas, turns a killed replica red by itself, shows when a certificate
//! expires, draws traffic as it comes, and logs no error (a CSP violation included).
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use e2e::browser::Browser;
use e2e::{admin_json, client, Gateway, Replica, TestConfig};

/// The health interval of the test pool; the page must show a flip within two.
const INTERVAL: Duration = Duration::from_secs(2);

fn screenshot_path() -> PathBuf {
    std::env::var_os("STATUS_PAGE_SCREENSHOT").map_or_else(
        || {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .unwrap()
                .join("target/status-page.png")
        },
        PathBuf::from,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_status_page_shows_the_edge_live_in_a_real_browser() {
    let r1 = Replica::start("r1");
    let mut r2 = Replica::start("r2");
    let state = tempfile::tempdir().unwrap();
    let config = TestConfig::plain_and_tls(state.path())
        .internal_site(&["localhost"], "")
        .checked_pool("api", &[&r1, &r2], &format!("{}s", INTERVAL.as_secs()))
        .with("[rate_limits.tight]\nrate = \"5 per 1m\"\n")
        .route(
            "/login",
            "api",
            "name = \"login\"\nrate_limits = [\"tight\"]\n",
        )
        .route("/api", "api", "name = \"api\"\n")
        .build();
    let gw = Gateway::start(&config);
    let status = admin_json(&gw, "/status").await;
    let not_after = status["certificates"][0]["served"]["not_after"]
        .as_i64()
        .expect("the internal certificate is in service and in /status");

    let browser = Browser::launch().await;
    browser.navigate(&gw.admin_url("/")).await;

    // Routes and replicas, both up (green).
    let shown = browser
        .wait_for(
            "document.querySelectorAll('#routes tr[data-route]').length === 2 && \
             document.querySelectorAll('tr[data-replica][data-state=up]').length === 2",
            Duration::from_secs(15),
        )
        .await;
    assert!(shown.is_some(), "routes and two healthy replicas shown");
    let routes = browser
        .eval("document.querySelector('#routes tbody').innerText")
        .await;
    let routes = routes.as_str().unwrap();
    assert!(
        routes.contains("/login") && routes.contains("tight"),
        "{routes}"
    );
    for r in [&r1, &r2] {
        let dot = browser
            .eval(&format!(
                "getComputedStyle(document.querySelector('tr[data-replica=\"{}\"] .dot')).backgroundColor",
                r.addr
            ))
            .await;
        assert_eq!(dot, "rgb(26, 127, 55)", "{} is green", r.addr);
    }

    // The certificate's expiry, as the date the gateway serves.
    let expected = time::OffsetDateTime::from_unix_timestamp(not_after).unwrap();
    let date = format!(
        "{:04}-{:02}-{:02}",
        expected.year(),
        u8::from(expected.month()),
        expected.day()
    );
    let expiry = browser
        .eval("document.querySelector('tr[data-cert=\"localhost\"] .expiry').innerText")
        .await;
    assert!(
        expiry.as_str().unwrap().contains(&date),
        "expiry {expiry} shows {date}"
    );

    // The traffic chart moves under load: requests, and rate-limit refusals.
    let before = browser
        .eval("document.querySelector('#chart-requests polyline[data-series=requests]').getAttribute('points')")
        .await;
    // Four bursts a slot apart, so the lines have a shape and not one point.
    let c = client();
    let mut limited = 0;
    for i in 0..200 {
        if i % 50 == 49 {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        let path = if i % 10 == 0 { "/login" } else { "/api/whoami" };
        let r = c.get(gw.url(path)).send().await.unwrap();
        limited += usize::from(r.status() == 429);
    }
    assert!(limited > 0, "the tight limit refused some");
    let moved = browser
        .wait_for(
            &format!(
                "(() => {{ const p = document.querySelector('#chart-requests polyline[data-series=requests]').getAttribute('points'); \
                 const rl = document.querySelector('#chart-requests polyline[data-series=rate-limited]').getAttribute('points'); \
                 const high = (s) => s.split(' ').some((xy) => parseFloat(xy.split(',')[1]) < 159.5); \
                 return p !== {before} && high(p) && high(rl); }})()"
            ),
            Duration::from_secs(10),
        )
        .await;
    assert!(moved.is_some(), "the request and rate-limit lines rose");
    let who = browser
        .eval("document.querySelector('tr[data-limit=tight] .refused').innerText")
        .await;
    assert!(
        who.as_str()
            .unwrap()
            .contains(&format!("127.0.0.1 ×{limited}")),
        "who the limit refused: {who}"
    );
    let counted = browser
        .wait_for(
            "document.querySelector('#route-traffic tr[data-route=api] td.num').innerText === '180'",
            Duration::from_secs(10),
        )
        .await;
    let api_row = browser
        .eval("document.querySelector('#route-traffic tr[data-route=api]').innerText")
        .await;
    assert!(
        counted.is_some(),
        "the api route counted its 180 requests in the last minute: {api_row}"
    );

    // A killed replica turns red without a reload, within two health intervals.
    browser.eval("window.notReloaded = true").await;
    r2.kill9();
    let killed = Instant::now();
    let red = browser
        .wait_for(
            &format!(
                "document.querySelector('tr[data-replica=\"{}\"]').dataset.state === 'down'",
                r2.addr
            ),
            INTERVAL * 3,
        )
        .await;
    let took = killed.elapsed();
    assert!(red.is_some(), "the killed replica never turned down");
    assert!(
        took <= INTERVAL * 2,
        "red after {took:?}, more than two intervals"
    );
    assert_eq!(browser.eval("window.notReloaded === true").await, true);
    let dot = browser
        .eval(&format!(
            "getComputedStyle(document.querySelector('tr[data-replica=\"{}\"] .dot')).backgroundColor",
            r2.addr
        ))
        .await;
    assert_eq!(dot, "rgb(207, 34, 46)", "the dead replica is red");
    let error = browser
        .eval(&format!(
            "document.querySelector('tr[data-replica=\"{}\"] .err').innerText",
            r2.addr
        ))
        .await;
    assert!(
        !error.as_str().unwrap().is_empty(),
        "the check's error is shown"
    );

    // Nothing went wrong in the page: no exception, console error, failed load or CSP
    // violation.
    let errors = browser.errors();
    assert!(errors.is_empty(), "errors in the page: {errors:#?}");

    let png = browser.screenshot().await;
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000);
    let path = screenshot_path();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, png).unwrap();
    eprintln!("screenshot: {}", path.display());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_is_small_self_contained_and_locked_down() {
    let r1 = Replica::start("r1");
    let gw = Gateway::start(&e2e::simple_config(&[&r1], "", ""));
    let c = client();
    let mut total = 0;
    for (path, kind) in [
        ("/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/style.css", "text/css"),
        ("/ui/icon.svg", "image/svg+xml"),
    ] {
        let r = c.get(gw.admin_url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let h = r.headers().clone();
        assert!(
            h["content-type"].to_str().unwrap().starts_with(kind),
            "{path}"
        );
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"));
        assert!(csp.contains("frame-ancestors 'none'"));
        assert_eq!(h["x-content-type-options"], "nosniff");
        total += r.bytes().await.unwrap().len();
    }
    assert!(total < 100 * 1024, "page and assets: {total} bytes");
    // The page lives on the admin listener only: the public one knows nothing of it.
    let public = c.get(gw.url("/ui/app.js")).send().await.unwrap();
    assert_ne!(public.status(), 200);
    let traffic = admin_json(&gw, "/status/traffic").await;
    assert_eq!(traffic["slot_seconds"], 2);
    assert_eq!(
        traffic["t"].as_array().unwrap().len(),
        traffic["requests_per_second"].as_array().unwrap().len()
    );
}
