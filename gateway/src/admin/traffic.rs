//! `/status/traffic`: the last five minutes from the traffic ring, as the time series
//! the status page draws (per second, per 2-second slot) and a last-minute summary per
//! route.

use serde_json::{json, Value};

use crate::state::Snapshot;
use crate::traffic::{self, RouteTraffic, SlotCounts, SLOTS, SLOT_SECS};

/// The summary covers the last minute.
const SUMMARY_SLOTS: usize = (60 / SLOT_SECS) as usize;

/// Per second; None for a slot before the process started (nothing was kept then).
fn rate(c: &Option<SlotCounts>, f: fn(&SlotCounts) -> u64) -> Option<f64> {
    c.as_ref().map(|c| f(c) as f64 / SLOT_SECS as f64)
}

/// Rounds a figure for display (three decimals are plenty for milliseconds).
fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// The complete slots of the window, oldest first: always the same count, so the
/// chart's time axis stays put (the slot being filled now is left out: it would always
/// look like a drop). Negative numbers are before the process started.
fn slots() -> Vec<i64> {
    let now = traffic::current_slot() as i64;
    (now - (SLOTS as i64 - 1)..now).collect()
}

fn route_series(
    name: &str,
    ring: &RouteTraffic,
    slots: &[i64],
    total: &mut [Option<SlotCounts>],
) -> Value {
    let counts: Vec<Option<SlotCounts>> = slots
        .iter()
        .map(|&n| u64::try_from(n).ok().map(|n| ring.read(n)))
        .collect();
    for (t, c) in total.iter_mut().zip(&counts) {
        if let (Some(t), Some(c)) = (t.as_mut(), c) {
            t.add(c);
        }
    }
    let mut minute = SlotCounts::default();
    for c in counts.iter().rev().take(SUMMARY_SLOTS).flatten() {
        minute.add(c);
    }
    let q = |c: &SlotCounts, q: f64| c.quantile_ms(q).map(round);
    json!({
        "name": name,
        "requests_per_second": counts.iter().map(|c| rate(c, |c| c.requests)).collect::<Vec<_>>(),
        "p50_ms": counts.iter().map(|c| c.as_ref().and_then(|c| q(c, 0.5))).collect::<Vec<_>>(),
        "p99_ms": counts.iter().map(|c| c.as_ref().and_then(|c| q(c, 0.99))).collect::<Vec<_>>(),
        "last_minute": {
            "requests": minute.requests,
            "client_errors": minute.client_errors,
            "server_errors": minute.server_errors,
            "rate_limited": minute.rate_limited,
            "p50_ms": q(&minute, 0.5),
            "p99_ms": q(&minute, 0.99),
        },
    })
}

/// The whole series: totals over every route (and unrouted requests), and each route.
pub fn series(snapshot: &Snapshot) -> Value {
    let slots = slots();
    let mut total: Vec<Option<SlotCounts>> = slots
        .iter()
        .map(|&n| (n >= 0).then(SlotCounts::default))
        .collect();
    let mut routes: Vec<Value> = snapshot
        .router
        .routes()
        .iter()
        .zip(&snapshot.traffic)
        .map(|(r, ring)| route_series(&r.name, ring, &slots, &mut total))
        .collect();
    routes.push(route_series(
        "(no route)",
        &snapshot.unrouted,
        &slots,
        &mut total,
    ));
    json!({
        "slot_seconds": SLOT_SECS,
        "t": slots.iter().map(|&n| traffic::slot_start(n)).collect::<Vec<_>>(),
        "requests_per_second": total.iter().map(|c| rate(c, |c| c.requests)).collect::<Vec<_>>(),
        "client_errors_per_second": total.iter().map(|c| rate(c, |c| c.client_errors)).collect::<Vec<_>>(),
        "server_errors_per_second": total.iter().map(|c| rate(c, |c| c.server_errors)).collect::<Vec<_>>(),
        "rate_limited_per_second": total.iter().map(|c| rate(c, |c| c.rate_limited)).collect::<Vec<_>>(),
        "routes": routes,
    })
}
