#!/usr/bin/env bash
# User-space instructions per request of the gateway (release build), counted by
# valgrind's callgrind: repeatable to ~0.1%, unlike wall-clock figures on a VM.
# Instrumentation is switched on only while a fixed load runs, then the total is
# divided by the requests served.
#
#   bench/callgrind.sh [plain|policy|https|h2]
#   TARGET=bare-pingora bench/callgrind.sh [plain|https|h2]   # the floor, same load
#
# plain/policy: wrk over HTTP/1.1 keep-alive (8 connections); https: the same over TLS
# (8 handshakes, then keep-alive); h2: h2load, 10 connections x 10 streams over TLS.
# GATEWAY_BIN=path measures that binary instead of building target/release/gateway (or,
# with TARGET=bare-pingora, the example): bench/pingora-patched.sh uses it for a build
# against a patched Pingora.
# HEAD=browser sends the request head a browser sends for a page (~900 bytes,
# measure.BROWSER_HEAD) instead of wrk's and h2load's ~40: per-byte work on the head
# shows only then.
# CACHE_SIM=1 adds valgrind's cache simulation (its model of this machine's caches) and
# prints misses per request beside the instructions: what a larger working set costs,
# which the instruction count does not show (this VM exposes no hardware counters).
set -euo pipefail
cd "$(dirname "$0")/.."
SCENARIO="${1:-plain}"
TARGET="${TARGET:-gateway}"
bash tests/deps.sh valgrind nginx wrk nghttp2-client
if [ -z "${GATEWAY_BIN:-}" ] && [ "$TARGET" = bare-pingora ]; then
  cargo build --release -p gateway --example bare_pingora 2>&1 | tail -1
  GATEWAY_BIN=target/release/examples/bare_pingora
elif [ -z "${GATEWAY_BIN:-}" ]; then
  cargo build --release -p gateway 2>&1 | tail -1
  GATEWAY_BIN=target/release/gateway
fi
export GATEWAY_BIN TARGET
RUN="$(mktemp -d /tmp/gateway-callgrind.XXXXXX)"
trap 'python3 bench/measure.py --run "$RUN" --stop-all; pkill -f "callgrind.*(gateway run|bare_pingora)" || true' EXIT
python3 - "$RUN" "$SCENARIO" <<'PY'
import os, sys, subprocess, time, re, glob
sys.path.insert(0, "bench")
import measure
run, scenario = sys.argv[1], sys.argv[2]
target = os.environ["TARGET"]
measure.setup(run)
up = measure.start_upstreams(run)
http, https = measure.PORTS[target]
if target == "bare-pingora":
    assert scenario != "policy", "the floor has no policy"
    args = ["--tls", f"127.0.0.1:{https}", f"{run}/cert.pem", f"{run}/key.pem",
            f"127.0.0.1:{http}", *(f"127.0.0.1:{u}" for u in measure.UPSTREAMS)]
else:
    cfg = f"{run}/gateway.toml"
    open(cfg, "w").write(measure.gateway_config(run, scenario == "policy"))
    args = ["run", "--config", cfg]
gw = measure.spawn(run, "callgrind",
    ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={run}/callgrind.out",
     *(["--cache-sim=yes"] if os.environ.get("CACHE_SIM") else []),
     os.environ["GATEWAY_BIN"], *args], 1, log=f"{run}/target.log")
assert measure.wait_port(https if scenario in ("https", "h2") else http, timeout=120), \
    f"{target} under valgrind did not start"

head = measure.BROWSER_HEAD if os.environ.get("HEAD") == "browser" else []
wrk_head = measure.head_args(head)

def load(seconds):
    if scenario == "https":
        return measure.run_wrk(f"https://localhost:{https}/", seconds, 8, wrk_head)
    if scenario == "h2":
        return measure.run_h2load(f"https://localhost:{https}/", seconds, head=head)
    return measure.run_wrk(f"http://127.0.0.1:{http}/", seconds, 8, wrk_head)

load(3)   # warm up
subprocess.run(["callgrind_control", "-i", "on", str(gw.pid)], check=True, capture_output=True)
res = load(10)
subprocess.run(["callgrind_control", "-i", "off", str(gw.pid)], check=True, capture_output=True)
subprocess.run(["callgrind_control", "-d", str(gw.pid)], check=True, capture_output=True)
time.sleep(1)
total, events, counts = 0, [], []
for f in glob.glob(f"{run}/callgrind.out*"):
    for line in open(f):
        if line.startswith("events:"):
            names = line.split()[1:]
        m = re.match(r"(?:summary|totals): ([\d ]+)", line)
        if m and int(m.group(1).split()[0]) > total:
            counts = [int(x) for x in m.group(1).split()]
            total, events = counts[0], names
measure.stop(gw)
measure.stop(up)
assert res["errors"] == 0 and res["requests"] > 0, f"the load failed: {res}"
print(f"{target} {scenario}{' (browser head)' if head else ''}: {res['requests']} requests, {total} instructions, "
      f"{total / max(res['requests'], 1):.0f} instructions/request")
if len(events) > 1:
    print("per request: " + ", ".join(f"{e} {c / max(res['requests'], 1):.0f}"
                                      for e, c in zip(events, counts)))
PY
