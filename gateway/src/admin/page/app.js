// The status page: polls /status and /status/traffic once a second and redraws.
// Every text from the gateway goes in as text (textContent), never as markup: error
// messages come from replicas and CAs.
"use strict";

const POLL_MS = 1000;
const SVG = "http://www.w3.org/2000/svg";
const PALETTE = ["#0969da", "#bf3989", "#1a7f37", "#9a6700", "#8250df", "#cf222e", "#57606a", "#0550ae"];

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === undefined || c === null) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

function svgEl(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function ago(seconds) {
  if (seconds < 0) seconds = 0;
  if (seconds < 90) return Math.round(seconds) + "s";
  if (seconds < 5400) return Math.round(seconds / 60) + "m";
  if (seconds < 172800) return Math.round(seconds / 3600) + "h";
  return Math.round(seconds / 86400) + "d";
}

function when(epoch) {
  return new Date(epoch * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

function num(v, digits) {
  if (v === null || v === undefined) return "-";
  return Number(v).toFixed(digits);
}

function bytes(n) {
  for (const [unit, size] of [["GiB", 1 << 30], ["MiB", 1 << 20], ["KiB", 1 << 10]]) {
    if (n >= size && n % size === 0) return n / size + " " + unit;
  }
  return n + " B";
}

// Pingora's errors carry their whole chain ("ConnectRefused context: ... cause: ...");
// the last cause is what an operator needs at a glance, the rest is in the tooltip.
function shortError(text) {
  const i = text.lastIndexOf("cause: ");
  return i >= 0 ? text.slice(i + "cause: ".length) : text;
}

function renderSummary(s) {
  const g = s.gateway;
  const store = s.store ? (s.store.up ? " · store up" : " · store DOWN") : "";
  document.getElementById("summary").textContent =
    "version " + g.version + " · up " + ago(g.uptime_seconds) + " · " +
    s.requests_in_flight + " in flight · config " + s.config.source + " (" + s.config.digest + ")" + store;
}

function renderPools(s, now) {
  const body = document.querySelector("#pools .body");
  const blocks = s.pools.map((p) => {
    const rows = p.replicas.map((r) => {
      const last = r.last_check;
      const state = r.healthy ? "up" : "down";
      const since = r.state_since ? " for " + ago(now - r.state_since) : "";
      let check = "no active check";
      if (last) check = (last.ok ? "ok" : "failed") + ", " + ago(now - last.at) + " ago";
      return el("tr", { class: state, "data-replica": r.address, "data-state": state },
        el("td", {}, el("span", { class: "dot" }), r.address),
        el("td", {}, state + since),
        el("td", {}, check),
        el("td", { class: "err", title: last && last.error ? last.error : null }, last && last.error ? shortError(last.error) : ""));
    });
    const head = el("tr", {}, el("th", {}, "replica"), el("th", {}, "state"), el("th", {}, "last check"), el("th", {}, "error"));
    return el("div", { class: "pool", "data-pool": p.name },
      el("h3", {}, p.name, el("span", { class: "muted" }, p.active_health_checks ? "  (health-checked)" : "  (passive only)")),
      el("table", {}, el("thead", {}, head), el("tbody", {}, ...rows)));
  });
  body.replaceChildren(...blocks);
}

function policyText(r) {
  const parts = [];
  if (r.rate_limits.length) parts.push("limits: " + r.rate_limits.join(", "));
  if (r.cors) parts.push("cors: " + r.cors);
  if (r.compression) parts.push("compress: " + r.compression);
  if (r.max_body_size !== null && r.max_body_size !== undefined) parts.push("body ≤ " + bytes(r.max_body_size));
  if (r.strip_prefix) parts.push("strip prefix");
  return parts.join(" · ") || "-";
}

function renderRoutes(s) {
  fill(document.querySelector("#routes tbody"), s.config.routes.map((r) =>
    el("tr", { "data-route": r.name },
      el("td", {}, r.name), el("td", {}, r.host || "any"), el("td", {}, r.path),
      el("td", {}, r.pool), el("td", {}, policyText(r)))));
}

function renderCertificates(s, now) {
  fill(document.querySelector("#certificates tbody"), s.certificates.map((c) => {
    let expires = el("span", { class: "muted" }, "none in service yet");
    if (c.served) {
      const left = c.served.not_after - now;
      // Amber once a renewal is overdue (or, for files, within two weeks of expiry).
      const late = c.next_renewal ? now >= c.next_renewal : left < 14 * 86400;
      const cls = left <= 0 ? "expired" : late ? "soon" : "";
      expires = el("span", { class: cls }, when(c.served.not_after) + " (" + (left > 0 ? "in " + ago(left) : "expired") + ")");
    }
    const renewal = c.next_renewal ? (c.next_renewal <= now ? "due now" : when(c.next_renewal)) : "-";
    let error = "";
    if (c.acme && c.acme.last_error) {
      error = el("span", { class: "err" }, when(c.acme.last_error.at) + ": " + c.acme.last_error.message +
        (c.acme.retry_at ? " (retry " + when(c.acme.retry_at) + ")" : ""));
    }
    return el("tr", { "data-cert": c.names[0] },
      el("td", {}, c.names.join(", ")), el("td", {}, c.source),
      el("td", { class: "expiry" }, expires), el("td", {}, renewal), el("td", {}, error));
  }));
}

function renderLimits(s) {
  fill(document.querySelector("#limits tbody"), s.config.rate_limits.map((l) => {
    const who = l.refused_recently.map((r) => r.client + " ×" + r.refusals + " (" + ago(r.last_seconds_ago) + " ago)");
    return el("tr", { "data-limit": l.name }, el("td", {}, l.name), el("td", {}, l.rate), el("td", { class: "num" }, l.burst),
      el("td", {}, l.key), el("td", { class: "num" }, l.tracked_clients),
      el("td", { class: "refused" }, who.length ? who.join(", ") : "-"));
  }));
}

function renderReloads(s) {
  document.querySelector("#reloads .config").textContent =
    "running " + s.config.source + " (sha256 " + s.config.digest + "), listeners " +
    s.config.listeners.join(", ") + ", admin " + s.config.admin;
  const rows = s.reloads.slice().reverse().map((r) =>
    el("tr", {}, el("td", {}, when(r.at)), el("td", {}, r.trigger),
      el("td", { class: r.ok ? "" : "err" }, r.ok ? (r.needs_restart ? "applied, restart needed" : "applied") : "refused"),
      el("td", { class: "err" }, (r.errors || []).join("\n"))));
  fill(document.querySelector("#reloads tbody"), rows.length ? rows : [el("tr", {}, el("td", { colspan: 4, class: "muted" }, "no reload since start"))]);
}

// Draws series (arrays of numbers or nulls) into an SVG, scaled to their maximum.
function chart(svg, series, unit) {
  const W = 600, H = 160, TOP = 12;
  let max = 0;
  for (const s of series) for (const v of s.values) if (v !== null && v > max) max = v;
  const scale = max > 0 ? niceCeil(max) : 1;
  const kids = [];
  for (const f of [0.25, 0.5, 0.75]) {
    const y = TOP + (H - TOP) * (1 - f);
    kids.push(svgEl("line", { class: "grid", x1: 0, x2: W, y1: y, y2: y }));
  }
  const texts = [[4, 10, "start", "max " + num(scale, scale < 10 ? 2 : 0) + " " + unit],
    [4, H - 3, "start", "-5 min"], [W - 4, H - 3, "end", "now"]];
  for (const [x, y, anchor, text] of texts) {
    const t = svgEl("text", { x: x, y: y, "text-anchor": anchor });
    t.textContent = text;
    kids.push(t);
  }
  for (const s of series) {
    const n = s.values.length;
    const pts = [];
    s.values.forEach((v, i) => {
      if (v === null) return;
      const x = n > 1 ? (i * W) / (n - 1) : 0;
      const y = TOP + (H - TOP) * (1 - v / scale);
      pts.push(x.toFixed(1) + "," + y.toFixed(1));
    });
    const line = svgEl("polyline", { points: pts.join(" "), stroke: s.color, "data-series": s.name });
    if (s.dashed) line.setAttribute("stroke-dasharray", "4 3");
    kids.push(line);
  }
  svg.replaceChildren(...kids);
}

function niceCeil(v) {
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function renderTraffic(t) {
  chart(document.getElementById("chart-requests"), [
    { name: "requests", values: t.requests_per_second, color: "#0969da" },
    { name: "4xx", values: t.client_errors_per_second, color: "#9a6700" },
    { name: "5xx", values: t.server_errors_per_second, color: "#cf222e" },
    { name: "rate-limited", values: t.rate_limited_per_second, color: "#8250df" },
  ], "req/s");
  const lat = [];
  t.routes.forEach((r, i) => {
    const color = PALETTE[i % PALETTE.length];
    lat.push({ name: r.name + " p99", values: r.p99_ms, color: color });
    lat.push({ name: r.name + " p50", values: r.p50_ms, color: color, dashed: true });
  });
  chart(document.getElementById("chart-latency"), lat, "ms");
  const rows = [];
  t.routes.forEach((r, i) => {
    const m = r.last_minute;
    if (r.name === "(no route)" && m.requests === 0) return;
    const key = el("span", { class: "key" });
    key.style.color = PALETTE[i % PALETTE.length]; // CSSOM: allowed by the CSP
    rows.push(el("tr", { "data-route": r.name },
      el("td", {}, key, r.name),
      el("td", { class: "num" }, m.requests), el("td", { class: "num" }, m.client_errors),
      el("td", { class: "num" }, m.server_errors), el("td", { class: "num" }, m.rate_limited),
      el("td", { class: "num" }, num(m.p50_ms, 2)), el("td", { class: "num" }, num(m.p99_ms, 2))));
  });
  fill(document.querySelector("#route-traffic tbody"), rows);
}

async function getJson(path) {
  const r = await fetch(path, { cache: "no-store" });
  if (!r.ok) throw new Error(path + ": HTTP " + r.status);
  return r.json();
}

async function tick() {
  try {
    const [s, t] = await Promise.all([getJson("/status"), getJson("/status/traffic")]);
    const now = s.gateway.now;
    renderSummary(s);
    renderPools(s, now);
    renderRoutes(s);
    renderCertificates(s, now);
    renderLimits(s);
    renderReloads(s);
    renderTraffic(t);
    document.getElementById("stale").hidden = true;
    document.body.dataset.updated = String(Date.now());
  } catch (e) {
    // The gateway restarting or unreachable: keep the last picture, say it is old.
    const stale = document.getElementById("stale");
    stale.hidden = false;
    stale.title = String(e);
    document.body.dataset.lastError = String(e);
  } finally {
    setTimeout(tick, POLL_MS);
  }
}

tick();
