#!/usr/bin/env python3
"""Runs the benchmark rounds for bench/run.sh: writes each proxy's config, starts it
pinned to core 1, drives it with wrk / h2load pinned to core 0, and records req/s,
latency percentiles, CPU microseconds per request (utime+stime from /proc), peak RSS
and errors. Prints and writes a markdown table with medians over the rounds and
ratios against nginx taken within the same round."""

import argparse
import json, os, re, signal, socket, statistics, subprocess, sys, time
from pathlib import Path

UPSTREAMS = [9101, 9102, 9103]
# upstream-api replicas (the app our users run) for the `api` scenario
API_UPSTREAMS = [9111, 9112, 9113]
PORTS = {  # target: (http, https)
    "gateway": (9201, 9202),
    "nginx": (9301, 9302),
    "haproxy": (9401, 9402),
    "caddy": (9501, 9502),
    # the floor: a bare Pingora proxy (gateway/examples/bare_pingora.rs)
    "bare-pingora": (9601, 9602),
}
RATE = 5000  # requests per second offered in the fixed-rate scenario
HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "strict-origin-when-cross-origin",
}
TICK = os.sysconf("SC_CLK_TCK")


# What a browser sends with a page request (Chromium 131 on Linux, cookie made up), as
# -H arguments for wrk and h2load: the head is ~900 bytes where wrk's own is ~40, and
# per-byte work on the head shows only with a head of this size. No Accept-Encoding,
# so that a gateway route with compression on answers as the floor does.
BROWSER_HEAD = [
    ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
                   "Chrome/131.0.0.0 Safari/537.36"),
    ("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,"
               "image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7"),
    ("Accept-Language", "en-US,en;q=0.9,de;q=0.8"),
    ("Cache-Control", "max-age=0"),
    ("Sec-Ch-Ua", '"Chromium";v="131", "Not_A Brand";v="24"'),
    ("Sec-Ch-Ua-Mobile", "?0"),
    ("Sec-Ch-Ua-Platform", '"Linux"'),
    ("Sec-Fetch-Dest", "document"),
    ("Sec-Fetch-Mode", "navigate"),
    ("Sec-Fetch-Site", "none"),
    ("Sec-Fetch-User", "?1"),
    ("Upgrade-Insecure-Requests", "1"),
    ("Cookie", "session=8f14e45fceea167a5a36dedd4bea2543; theme=dark; "
               "_ga=GA1.1.1234567890.1732900000; _ga_ABCDEF=GS1.1.1732900000.3.1.1732900100.0.0.0; "
               "consent=necessary%2Cstatistics"),
]


def head_args(head):
    """-H arguments for `head` (a list of name, value pairs), for wrk and h2load alike."""
    return [a for k, v in head for a in ("-H", f"{k}: {v}")]


def pids_file(run):
    return Path(run) / "pids"


def spawn(run, name, cmd, core, env=None, log=None):
    out = open(Path(run) / f"{name}.log", "ab") if log is None else open(log, "ab")
    p = subprocess.Popen(["taskset", "-c", str(core)] + cmd, stdout=out, stderr=subprocess.STDOUT,
                         env={**os.environ, **(env or {})}, start_new_session=True)
    with open(pids_file(run), "a") as f:
        f.write(f"{p.pid}\n")
    return p


def stop(p):
    try:
        os.killpg(p.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()


def stop_all(run):
    f = pids_file(run)
    if not f.exists():
        return
    for line in f.read_text().split():
        try:
            os.killpg(int(line), signal.SIGKILL)
        except (ProcessLookupError, ValueError, PermissionError):
            pass


def wait_port(port, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def tree(pid):
    """pid and all its descendants (nginx master + worker, caddy, ...)."""
    children = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
                children.setdefault(int(fields[1]), []).append(int(d.name))
            except OSError:
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def proc_times(pids):
    """(user, system) CPU in clock ticks and minor page faults, summed over `pids`."""
    user = system = faults = 0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            faults += int(fields[7])
            user += int(fields[11])
            system += int(fields[12])
        except OSError:
            pass
    return user, system, faults


def cpu_ticks(pids):
    user, system, _ = proc_times(pids)
    return user + system


def mem_kib(pids, key):
    total = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def catalog_json(size=20 * 1024):
    """A product catalogue page as an API returns it, about `size` bytes: varied ids,
    names, prices, timestamps and text from a fixed seed (repeating one record would
    compress far better than real JSON does)."""
    import random
    rnd = random.Random(20261130)
    words = ("green black oolong white herbal loose leaf organic tin pouch sample jasmine earl grey "
             "sencha matcha chai mint rooibos smoky floral fruity bold light fresh spring harvest").split()
    items = []
    while len(json.dumps({"items": items})) < size:
        n = len(items)
        items.append({
            "id": 100000 + rnd.randrange(900000), "sku": f"T-{rnd.randrange(16**6):06X}",
            "name": " ".join(rnd.choice(words) for _ in range(rnd.randint(2, 4))).title(),
            "price": round(rnd.uniform(2, 60), 2), "currency": "EUR", "stock": rnd.randrange(500),
            "rating": round(rnd.uniform(1, 5), 1), "reviews": rnd.randrange(2000),
            "tags": rnd.sample(words, rnd.randint(1, 4)),
            "updated_at": f"2026-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}T{rnd.randint(0, 23):02d}:"
                          f"{rnd.randint(0, 59):02d}:{rnd.randint(0, 59):02d}Z",
            "url": f"/products/{n}-{rnd.choice(words)}-{rnd.choice(words)}",
        })
    return json.dumps({"page": 1, "per_page": len(items), "total": 4210, "items": items})


# The `compress-*` scenarios: the same level for gzip everywhere (nginx's
# gzip_comp_level, Caddy's `gzip 5`, the gateway's `levels`), each proxy's zstd at its
# default (Caddy: "default", about zstd level 3; the gateway: 3), brotli at the
# gateway's default 4 (Debian's nginx and Caddy have no brotli).
GZIP_LEVEL = 5
COMPRESS = {"compress-gzip": "gzip", "compress-zstd": "zstd", "compress-br": "br"}


def setup(run):
    run = Path(run)
    run.chmod(0o755)  # nginx's worker (not root) reads the files served from here
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                    "-keyout", str(run / "key.pem"), "-out", str(run / "cert.pem")], check=True, capture_output=True)
    (run / "haproxy.pem").write_text((run / "cert.pem").read_text() + (run / "key.pem").read_text())
    (run / "4k.txt").write_text("x" * 4096)
    (run / "catalog.json").write_text(catalog_json())
    listens = "\n".join(f"    listen 127.0.0.1:{p} backlog=4096;" for p in UPSTREAMS)
    (run / "upstream.conf").write_text(f"""
worker_processes 1; daemon off; pid {run}/upstream.pid; error_log {run}/upstream-error.log;
worker_rlimit_nofile 65535;
events {{ worker_connections 16384; }}
http {{
  access_log off; keepalive_requests 1000000; keepalive_timeout 300s;
  server {{
{listens}
    location = /4k {{ default_type text/plain; alias {run}/4k.txt; }}
    location = /catalog.json {{ default_type application/json; alias {run}/catalog.json; }}
    location / {{ default_type application/json; return 200 '{{"ok":true}}'; }}
  }}
}}
""")


def start_upstreams(run):
    """The three nginx replicas every target proxies to, on core 0 (after `setup`)."""
    up = spawn(run, "upstream", ["nginx", "-c", f"{run}/upstream.conf", "-p", str(run)], 0)
    assert all(wait_port(p) for p in UPSTREAMS), "upstream nginx did not start"
    return up


def spawn_apis(run, ports):
    """Three upstream-api replicas on `ports`, on core 0 with the load generator."""
    apis = [spawn(run, f"api{i}", ["upstream-api", "--listen", f"127.0.0.1:{p}", "--replica-id", f"r{i}"], 0)
            for i, p in enumerate(ports)]
    assert all(wait_port(p) for p in ports), "upstream-api did not start"
    return apis


def gateway_config(run, policy, ups=UPSTREAMS, health=False, scope=None, store_port=None, compress=False,
                   on_demand=False):
    """`scope`: a per-address limit that never refuses, counted "local" or in the
    "cluster" store (redis on `store_port`), without the rest of the policy scenario.
    `compress`: the route compresses (zstd, br, gzip; gzip at GZIP_LEVEL).
    `on_demand`: a second site issues on demand, so the pre-TLS hook reads every
    ClientHello (the bench's SNI, localhost, is covered: nothing is asked or ordered)."""
    run = Path(run)
    http, https = PORTS["gateway"]
    replicas = ", ".join(f'"127.0.0.1:{p}"' for p in ups)
    sets = ", ".join(f'"{k}" = "{v}"' for k, v in HEADERS.items())
    limit = 'rate_limits = ["never"]' if policy or scope else ""
    store = f'[store]\nredis = "redis://127.0.0.1:{store_port}/0"\n' if scope == "cluster" else ""
    if compress:
        store += f'[compression.bench]\nlevels = {{ gzip = {GZIP_LEVEL} }}\n'
        limit += '\ncompression = "bench"'
    return f"""
[server]
threads = 1
[log]
level = "warn,access=info"
access_log = {"true" if policy else "false"}
[[listeners]]
address = "127.0.0.1:{http}"
[[listeners]]
address = "127.0.0.1:{https}"
tls = true
[admin]
address = "127.0.0.1:9209"
[tls]
state_dir = "{run}/gw-state"
[[sites]]
names = ["localhost"]
certificate = "files"
cert_file = "{run}/cert.pem"
key_file = "{run}/key.pem"
redirect = "off"
{ON_DEMAND_SITE if on_demand else ""}
[headers]
security_defaults = false
set = {{ {sets} }}
{store}[rate_limits.never]
rate = "10000000 per 1s"
key = "address"
{'scope = "cluster"' if scope == "cluster" else ""}
[pools.up]
replicas = [{replicas}]
{'[pools.up.health]' + chr(10) + 'path = "/readyz"' + chr(10) + 'interval = "1s"' if health else ""}
[[routes]]
path = "/"
pool = "up"
{limit}
"""


def nginx_config(run, policy, ups=UPSTREAMS, limit_only=False, compress=False):
    """`limit_only`: `limit_req` (never refusing) without the policy scenario's access log.
    `compress`: gzip at GZIP_LEVEL, as our users' nginx configs turn it on."""
    run = Path(run)
    http, https = PORTS["nginx"]
    ups = "\n".join(f"    server 127.0.0.1:{p};" for p in ups)
    adds = "\n".join(f"      add_header {k} {v} always;" for k, v in HEADERS.items())
    log = (f"""log_format json escape=json '{{"time":"$time_iso8601","request_id":"$request_id","client_ip":"$remote_addr","method":"$request_method","host":"$host","path":"$uri","status":$status,"bytes":$body_bytes_sent,"duration_ms":$request_time,"upstream":"$upstream_addr"}}';
  access_log {run}/nginx-access.log json;""" if policy and not limit_only else "access_log off;")
    zone = "limit_req_zone $binary_remote_addr zone=never:10m rate=10000000r/s;" if policy or limit_only else ""
    limit = "limit_req zone=never burst=10000000 nodelay;" if policy or limit_only else ""
    return f"""
worker_processes 1; daemon off; pid {run}/nginx.pid; error_log {run}/nginx-error.log;
worker_rlimit_nofile 65535;
events {{ worker_connections 16384; }}
http {{
  {log}
  {zone}
  {f"gzip on; gzip_comp_level {GZIP_LEVEL}; gzip_min_length 512; gzip_proxied any; gzip_vary on; gzip_types application/json;" if compress else ""}
  keepalive_requests 1000000;
  map $https $hsts {{ on "max-age=31536000"; default ""; }}
  upstream up {{
{ups}
    keepalive 128;
  }}
  server {{
    listen 127.0.0.1:{http} backlog=4096;
    listen 127.0.0.1:{https} ssl http2 backlog=4096;
    ssl_certificate {run}/cert.pem; ssl_certificate_key {run}/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {{
      {limit}
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Request-ID $request_id;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
{adds}
      add_header X-Request-ID $request_id always;
      add_header Strict-Transport-Security $hsts always;
    }}
  }}
}}
"""


def haproxy_config(run, ups=UPSTREAMS):
    run = Path(run)
    http, https = PORTS["haproxy"]
    servers = "\n".join(f"  server s{i} 127.0.0.1:{p}" for i, p in enumerate(ups))
    sets = "\n".join(f"  http-response set-header {k} {v}" for k, v in HEADERS.items())
    return f"""
global
  nbthread 1
  # HAProxy reserves about two descriptors per connection; this machine's hard limit
  # is 20,000, so it holds at most 9,900 of the 10,000 idle connections.
  maxconn 9900
  tune.ssl.default-dh-param 2048
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
  http-reuse always
frontend fe
  bind 127.0.0.1:{http}
  bind 127.0.0.1:{https} ssl crt {run}/haproxy.pem alpn h2,http/1.1
  unique-id-format %{{+X}}o\\ %ci:%cp_%fi:%fp_%Ts_%rt:%pid
  unique-id-header X-Request-ID
{sets}
  http-response set-header X-Request-ID %[unique-id]
  http-response set-header Strict-Transport-Security max-age=31536000 if {{ ssl_fc }}
  default_backend be
backend be
  balance roundrobin
  http-request set-header X-Forwarded-Proto https if {{ ssl_fc }}
  option forwardfor
{servers}
"""


def caddy_config(run, ups=UPSTREAMS, health=False, compress=False):
    run = Path(run)
    http, https = PORTS["caddy"]
    ups = " ".join(f"127.0.0.1:{p}" for p in ups)
    hdrs = "\n".join(f"    {k} {v}" for k, v in HEADERS.items())
    block = f"""  reverse_proxy {ups} {{
    lb_policy round_robin{chr(10) + "    health_uri /readyz" + chr(10) + "    health_interval 1s" if health else ""}
    header_up X-Request-ID {{http.request.uuid}}
  }}
  header {{
{hdrs}
    X-Request-ID {{http.request.uuid}}
    -Server
  }}"""
    if compress:
        block += f"""
  encode {{
    zstd
    gzip {GZIP_LEVEL}
  }}"""
    return f"""{{
  admin 127.0.0.1:9509
  auto_https off
  skip_install_trust
  storage file_system {run}/caddy-data
  log {{
    output discard
  }}
}}
http://localhost:{http}, http://127.0.0.1:{http} {{
{block}
}}
https://localhost:{https} {{
  tls {run}/cert.pem {run}/key.pem
{block}
  header Strict-Transport-Security max-age=31536000
}}
"""


# An on-demand site whose CA and ask endpoint are never reached in the bench.
ON_DEMAND_SITE = """[[sites]]
names = ["app.bench.test"]
certificate = "acme"
[sites.acme]
directory = "https://127.0.0.1:9/dir"
[sites.on_demand]
ask = "http://127.0.0.1:9/tls/allowed"
"""


def start_target(run, target, policy, ups=UPSTREAMS, health=False, compress=False, on_demand=False):
    """`health`: active health checks on /readyz every second where the proxy has them
    (the gateway, Caddy); nginx and HAProxy as configured above (passive)."""
    run = Path(run)
    http, _ = PORTS[target]
    if target == "gateway":
        cfg = run / f"gateway-{'policy' if policy else 'plain'}.toml"
        cfg.write_text(gateway_config(run, policy, ups, health, compress=compress, on_demand=on_demand))
        p = spawn(run, "gateway", ["gateway", "run", "--config", str(cfg)], 1,
                  log=run / ("gateway-access.log" if policy else "gateway.log"))
    elif target == "nginx":
        cfg = run / f"nginx-{'policy' if policy else 'plain'}.conf"
        cfg.write_text(nginx_config(run, policy, ups, compress=compress))
        p = spawn(run, "nginx", ["nginx", "-c", str(cfg), "-p", str(run)], 1)
    elif target == "haproxy":
        cfg = run / "haproxy.cfg"
        cfg.write_text(haproxy_config(run, ups))
        p = spawn(run, "haproxy", ["haproxy", "-f", str(cfg), "-db"], 1)
    elif target == "bare-pingora":
        tls = ["--tls", f"127.0.0.1:{PORTS[target][1]}", str(run / "cert.pem"), str(run / "key.pem")]
        p = spawn(run, "bare-pingora", ["bare_pingora", *tls, f"127.0.0.1:{http}", *(f"127.0.0.1:{u}" for u in ups)], 1)
    elif target == "caddy":
        cfg = run / "Caddyfile"
        cfg.write_text(caddy_config(run, ups, health, compress=compress))
        home = run / "caddy-home"
        home.mkdir(exist_ok=True)
        p = spawn(run, "caddy", ["caddy", "run", "--config", str(cfg), "--adapter", "caddyfile"], 1,
                  env={"GOMAXPROCS": "1", "HOME": str(home), "XDG_DATA_HOME": str(home), "XDG_CONFIG_HOME": str(home)})
    if not wait_port(http):
        raise SystemExit(f"{target} did not start; see {run}")
    time.sleep(0.5)
    return p


def parse_duration_ms(s):
    m = re.match(r"([\d.]+)(us|ms|s)", s)
    v, unit = float(m.group(1)), m.group(2)
    return v / 1000 if unit == "us" else v if unit == "ms" else v * 1000


def run_wrk(url, duration, conns, extra=()):
    out = subprocess.run(["taskset", "-c", "0", "wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--latency",
                          *extra, url], capture_output=True, text=True).stdout
    res = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}
    for pct in ("50", "99"):
        m = re.search(rf"\s{pct}%\s+([\d.]+\w+)", out)
        res[f"p{pct}_ms"] = parse_duration_ms(m.group(1)) if m else None
    res["requests"] = int(re.search(r"(\d+) requests in", out).group(1))
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors += int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors += sum(int(x) for x in m.groups()) if m else 0
    res["errors"] = errors
    return res


def run_wrk_rate(url, duration, conns, rate):
    """A fixed offered load: each connection waits 1/(rate/conns) s between requests
    (wrk's Lua `delay`), so every target gets the same request rate and p99 and CPU
    are compared at equal work, not at saturation."""
    script = Path(f"/tmp/wrk-rate-{rate}-{conns}.lua")
    script.write_text(f"function delay() return {max(1, round(1000 * conns / rate))} end\n")
    return run_wrk(url, duration, conns, ["-s", str(script)])


def run_h2load(url, duration, rate=None, head=()):
    """10 connections, 10 streams each. `rate`: a fixed offered load in req/s over all of
    them (h2load --rps per connection), with p50/p99 from its per-request log. `head`:
    headers added to every request (`BROWSER_HEAD`)."""
    extra, log = head_args(head), None
    if rate:
        log = Path(f"/tmp/h2load-rate-{os.getpid()}.log")
        extra += [f"--rps={rate / 10:g}", f"--log-file={log}"]
    out = subprocess.run(["taskset", "-c", "0", "h2load", "-c", "10", "-m", "10", "-D", str(duration), *extra, url],
                         capture_output=True, text=True).stdout
    m = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
    mean = re.search(r"time for request:\s+\S+\s+\S+\s+(\S+)", out)
    res = {"rps": float(m.group(1)) if m else 0.0, "requests": int(done.group(1)) if done else 0,
           "errors": (int(done.group(3)) + int(done.group(4))) if done else 1,
           "p50_ms": parse_duration_ms(mean.group(1)) if mean else None, "p99_ms": None}
    if log:
        # Columns: start (µs since the epoch), status, µs until the response ended.
        times = sorted(int(line.split("\t")[2]) for line in log.read_text().splitlines() if line.count("\t") >= 2)
        log.unlink()
        if times:
            res["p50_ms"] = times[len(times) // 2] / 1000
            res["p99_ms"] = times[min(len(times) - 1, len(times) * 99 // 100)] / 1000
    return res


def wire_size(url, coding):
    """Body bytes one response takes on the wire with `coding` asked for, and the coding
    the proxy answered with (an empty one would mean nothing was compressed)."""
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-H", f"Accept-Encoding: {coding}",
                          "-w", "%{size_download} %header{content-encoding}", url],
                         capture_output=True, text=True).stdout.split()
    return int(out[0]), (out[1] if len(out) > 1 else "")


def measure(run, target, proc, scenario, duration, conns):
    http, https = PORTS.get(target, (UPSTREAMS[0], None))
    pids = tree(proc.pid) if proc else []
    before = cpu_ticks(pids)
    if scenario in ("http", "policy", "direct"):
        res = run_wrk(f"http://127.0.0.1:{http}/", duration, conns)
    elif scenario == "https":
        res = run_wrk(f"https://localhost:{https}/", duration, conns)
    elif scenario in ("https-new", "https-new-ondemand"):
        # A new TCP connection and a full TLS handshake per request: wrk sends
        # "Connection: close" and does not resume sessions (no session cache or tickets
        # on its side).
        res = run_wrk(f"https://localhost:{https}/", duration, conns, ["-H", "Connection: close"])
    elif scenario == "api":
        res = run_wrk(f"http://127.0.0.1:{http}/api/whoami", duration, conns)
    elif scenario == "rate":
        res = run_wrk_rate(f"http://127.0.0.1:{http}/", duration, conns, RATE)
    elif scenario == "rate-https":
        res = run_wrk_rate(f"https://localhost:{https}/", duration, conns, RATE)
    elif scenario == "rate-h2":
        res = run_h2load(f"https://localhost:{https}/", duration, RATE)
    elif scenario == "h2":
        res = run_h2load(f"https://localhost:{https}/", duration)
    elif scenario in COMPRESS:
        url = f"http://127.0.0.1:{http}/catalog.json"
        res = run_wrk(url, duration, conns, ["-H", f"Accept-Encoding: {COMPRESS[scenario]}"])
        res["wire_bytes"], res["coding"] = wire_size(url, COMPRESS[scenario])
    used = (cpu_ticks(pids) - before) / TICK
    res["cpu_us_per_req"] = used * 1e6 / res["requests"] if res["requests"] and proc else None
    res["cpu_pct"] = 100 * used / duration if proc else None
    res["rss_peak_mib"] = mem_kib(pids, "VmHWM") / 1024 if proc else None
    return res


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
H2_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"      # empty SETTINGS
H2_SETTINGS_ACK = b"\x00\x00\x00\x04\x01\x00\x00\x00\x00"


async def open_idle_tls(port, kind, n):
    """`n` idle connections over TLS to `port`: `tls` completes the handshake (ALPN
    http/1.1) and sends nothing; `h2` negotiates h2, sends the preface and SETTINGS,
    acknowledges the server's, and sends nothing more. Returns (connections, errors,
    seconds taken); the connections stay open until their writers are closed."""
    import asyncio, ssl
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"] if kind == "h2" else ["http/1.1"])
    gate = asyncio.Semaphore(64)
    conns = []

    async def one():
        async with gate:
            r, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="localhost")
            alpn = w.get_extra_info("ssl_object").selected_alpn_protocol()
            if kind == "h2":
                assert alpn == "h2", f"ALPN {alpn}"
                w.write(H2_PREFACE + H2_SETTINGS)
                await asyncio.wait_for(r.read(9), 5)   # the server's SETTINGS (its header at least)
                w.write(H2_SETTINGS_ACK)
                await w.drain()
            conns.append((r, w))

    started = time.time()
    results = await asyncio.gather(*(one() for _ in range(n)), return_exceptions=True)
    errors = [e for e in results if isinstance(e, BaseException)]
    return conns, errors, time.time() - started


def idle_rss(run, target):
    """RSS idle, and with 10,000 idle keep-alive connections open."""
    import resource
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    proc = start_target(run, target, False)
    time.sleep(1)
    pids = tree(proc.pid)
    idle = mem_kib(pids, "VmRSS") / 1024
    socks = []
    for _ in range(10000):
        try:
            socks.append(socket.create_connection(("127.0.0.1", PORTS[target][0]), timeout=2))
        except OSError:
            break
    time.sleep(2)
    loaded = mem_kib(tree(proc.pid), "VmRSS") / 1024
    for s in socks:
        s.close()
    stop(proc)
    return {"idle_mib": idle, "conns_10k_mib": loaded, "connections": len(socks)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    ap.add_argument("--stop-all", action="store_true")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--conns", type=int, default=50)
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--only", default="", help="comma-separated scenarios; results go to only-<names>.md")
    ap.add_argument("--targets", default="",
                    help="comma-separated targets (nginx is always kept: the ratios need it)")
    a = ap.parse_args()
    if a.stop_all:
        stop_all(a.run)
        return
    setup(a.run)
    up = start_upstreams(a.run)
    apis = spawn_apis(a.run, API_UPSTREAMS)
    plan = [(t, s) for t in ("gateway", "nginx", "haproxy", "caddy")
            for s in ("http", "https", "https-new", "h2", "rate", "rate-https", "rate-h2")]
    plan += [(t, "api") for t in ("gateway", "nginx", "haproxy", "caddy")]
    plan += [("gateway", "policy"), ("nginx", "policy"), ("direct", "direct")]
    plan += [("bare-pingora", s) for s in ("http", "https", "https-new", "h2", "rate", "rate-https", "rate-h2")]
    plan += [(t, "compress-gzip") for t in ("gateway", "nginx", "caddy")]
    plan += [(t, "compress-zstd") for t in ("gateway", "caddy")] + [("gateway", "compress-br")]
    plan += [("gateway", "https-new-ondemand")]
    if a.only:
        plan = [(t, sc) for t, sc in plan if sc in a.only.split(",")]
    if a.targets:
        plan = [(t, sc) for t, sc in plan if t in a.targets.split(",") + ["nginx"]]
    rounds = []
    for r in range(a.rounds):
        results = {}
        order = plan if r % 2 == 0 else list(reversed(plan))  # alternate to spread drift
        for target, scenario in order:
            ups = API_UPSTREAMS if scenario == "api" else UPSTREAMS
            proc = None if target == "direct" else start_target(a.run, target, scenario == "policy", ups,
                                                                compress=scenario in COMPRESS,
                                                                on_demand=scenario.endswith("-ondemand"))
            measure(a.run, target, proc, scenario, 2, a.conns)  # warm-up
            res = measure(a.run, target, proc, scenario, a.duration, a.conns)
            results[f"{target}/{scenario}"] = res
            print(f"round {r + 1} {target:8} {scenario:7} {res['rps']:>10.0f} req/s  p99 {res['p99_ms']} ms  "
                  f"cpu {res['cpu_us_per_req'] or 0:.1f} us/req  errors {res['errors']}", flush=True)
            if proc:
                stop(proc)
        rounds.append(results)
    memory = {} if a.only else {t: idle_rss(a.run, t) for t in ("gateway", "nginx", "haproxy", "caddy")}
    stop(up)
    for p in apis:
        stop(p)
    report(rounds, memory, a)


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def report(rounds, memory, a):
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"only-{a.only.replace(',', '-')}" if a.only else "latest"
    if a.targets:
        name += f"-{a.targets.replace(',', '-')}"
    (out / f"{name}.json").write_text(json.dumps({"rounds": rounds, "memory": memory}, indent=1))
    keys = list(rounds[0].keys())
    rows = []
    for k in sorted(keys, key=lambda k: (k.split("/")[1], k)):
        target, scenario = k.split("/")
        vals = [r[k] for r in rounds]
        # Every compression scenario is compared with nginx's gzip (nginx has no other).
        ref = "nginx/compress-gzip" if scenario in COMPRESS else f"nginx/{scenario}"
        ratio = median([r[k]["rps"] / r[ref]["rps"] for r in rounds if ref in r and r[ref]["rps"]])
        cpu_ratio = median([r[k]["cpu_us_per_req"] / r[ref]["cpu_us_per_req"] for r in rounds
                            if ref in r and r[k]["cpu_us_per_req"] and r[ref]["cpu_us_per_req"]])
        fmt = lambda v, f: "-" if v is None else f.format(v)
        rows.append(f"| {scenario} | {target} | {fmt(median([v['rps'] for v in vals]), '{:.0f}')} | "
                    f"{fmt(ratio, '{:.2f}x')} | {fmt(median([v['p50_ms'] for v in vals]), '{:.2f}')} | "
                    f"{fmt(median([v['p99_ms'] for v in vals]), '{:.2f}')} | "
                    f"{fmt(median([v['cpu_us_per_req'] for v in vals]), '{:.1f}')} | {fmt(cpu_ratio, '{:.2f}x')} | "
                    f"{fmt(median([v.get('cpu_pct') for v in vals]), '{:.0f}')} | "
                    f"{fmt(max((v['rss_peak_mib'] or 0) for v in vals), '{:.1f}')} | {sum(v['errors'] for v in vals)} |")
    mem = "\n".join(f"| {t} | {m['idle_mib']:.1f} | {m['conns_10k_mib']:.1f} | {m['connections']} |" for t, m in memory.items())
    mem_table = ("| target | RSS idle MiB | RSS with idle connections MiB | connections held |\n"
                 f"|---|---|---|---|\n{mem}\n") if memory else ""
    identity = len(catalog_json().encode())
    crow = []
    for k in sorted((k for k in keys if k.split("/")[1] in COMPRESS), key=lambda k: (k.split("/")[1], k)):
        vals = [r[k] for r in rounds]
        wire = median([v.get("wire_bytes") for v in vals])
        codings = sorted({v.get("coding", "") for v in vals})
        crow.append(f"| {k.split('/')[1]} | {k.split('/')[0]} | {'/'.join(codings) or 'none'} | {wire:.0f} | "
                    f"{identity / wire:.2f} | {median([v['rps'] for v in vals]):.0f} | "
                    f"{median([v['cpu_us_per_req'] for v in vals]):.1f} |")
    compress_table = (f"""Compression (`compress-*`): `GET /catalog.json`, {identity} bytes of JSON from the upstream, with
`Accept-Encoding` naming one coding; gzip at level {GZIP_LEVEL} everywhere, zstd and brotli at the
proxy's default (gateway: zstd 3, br 4; Caddy: zstd "default").

| scenario | target | coding sent | bytes on the wire | ratio | req/s | CPU us/req |
|---|---|---|---|---|---|---|
{chr(10).join(crow)}
""" if crow else "")
    # The gateway against the floor, round by round: both ran in the same round, so the
    # ratio is free of the VM's drift between rounds, and the spread of the per-round
    # ratios shows what one run can resolve.
    frows = []
    for scenario in sorted({k.split("/")[1] for k in keys}):
        g, f = f"gateway/{scenario}", f"bare-pingora/{scenario}"
        if g not in keys or f not in keys:
            continue
        rps = [r[g]["rps"] / r[f]["rps"] for r in rounds if r[f]["rps"]]
        cpu = [r[g]["cpu_us_per_req"] / r[f]["cpu_us_per_req"] for r in rounds
               if r[g]["cpu_us_per_req"] and r[f]["cpu_us_per_req"]]
        each = ", ".join(f"{x:.2f}" for x in rps)
        frows.append(f"| {scenario} | {each} | {median(rps):.2f}x | "
                     f"{'-' if not cpu else f'{median(cpu):.2f}x'} |")
    floor_table = ("The gateway against the floor (bare Pingora), per round and median:\n\n"
                   "| scenario | req/s ratio by round | median | CPU/request ratio (median) |\n"
                   f"|---|---|---|---|\n{chr(10).join(frows)}\n") if frows else ""
    text = f"""# Benchmark results

{a.rounds} rounds, {a.duration} s per measurement, wrk -t1 -c{a.conns} (h2load -c10 -m10 for h2;
`rate`: {RATE} req/s offered over the same connections (`rate-https` over TLS, `rate-h2`
over HTTP/2 with h2load's 10x10 streams, p50/p99 from its per-request log); `https-new`: a new connection
and full TLS handshake per request (`https-new-ondemand`: the same with a site issuing
on demand, so the gateway reads each ClientHello before the handshake); `api`: three
upstream-api replicas, `GET /api/whoami`);
medians over rounds; ratios against nginx within the same round. Proxy alone on core 1,
upstreams and load generator on core 0. In the saturating `h2` scenario latency is h2load's mean, not p50.

| scenario | target | req/s | vs nginx | p50 ms | p99 ms | CPU us/req | CPU vs nginx | CPU % of a core | peak RSS MiB | errors |
|---|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

{floor_table}
{compress_table}
{mem_table}"""
    (out / f"{name}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
