#!/usr/bin/env bash
# User-space instructions per request of the gateway (release build), counted by
# valgrind's callgrind: repeatable to ~0.1%, unlike wall-clock figures on a VM.
# Instrumentation is switched on only while a fixed wrk load runs, then the total is
# divided by the requests served. Usage: bench/callgrind.sh [plain|policy]
# GATEWAY_BIN=path measures that binary instead of building target/release/gateway
# (bench/pingora-patched.sh uses it for a build against a patched Pingora).
set -euo pipefail
cd "$(dirname "$0")/.."
SCENARIO="${1:-plain}"
bash tests/deps.sh valgrind nginx wrk
if [ -z "${GATEWAY_BIN:-}" ]; then
  cargo build --release -p gateway 2>&1 | tail -1
  GATEWAY_BIN=target/release/gateway
fi
export GATEWAY_BIN
RUN="$(mktemp -d /tmp/gateway-callgrind.XXXXXX)"
trap 'python3 bench/measure.py --run "$RUN" --stop-all; pkill -f "callgrind.*gateway run" || true' EXIT
python3 - "$RUN" "$SCENARIO" <<'PY'
import os, sys, subprocess, time, re
sys.path.insert(0, "bench")
import measure
run, scenario = sys.argv[1], sys.argv[2]
measure.setup(run)
up = measure.start_upstreams(run)
cfg = f"{run}/gateway.toml"
open(cfg, "w").write(measure.gateway_config(run, scenario == "policy"))
gw = measure.spawn(run, "gateway-callgrind",
    ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={run}/callgrind.out",
     os.environ["GATEWAY_BIN"], "run", "--config", cfg], 1, log=f"{run}/gateway.log")
assert measure.wait_port(measure.PORTS["gateway"][0], timeout=120), "gateway under valgrind did not start"
measure.run_wrk(f"http://127.0.0.1:{measure.PORTS['gateway'][0]}/", 3, 8)   # warm up
subprocess.run(["callgrind_control", "-i", "on", str(gw.pid)], check=True, capture_output=True)
res = measure.run_wrk(f"http://127.0.0.1:{measure.PORTS['gateway'][0]}/", 10, 8)
subprocess.run(["callgrind_control", "-i", "off", str(gw.pid)], check=True, capture_output=True)
subprocess.run(["callgrind_control", "-d", str(gw.pid)], check=True, capture_output=True)
time.sleep(1)
total = 0
import glob
for f in glob.glob(f"{run}/callgrind.out*"):
    for line in open(f):
        m = re.match(r"summary: (\d+)", line) or re.match(r"totals: (\d+)", line)
        if m:
            total = max(total, int(m.group(1)))
measure.stop(gw)
measure.stop(up)
print(f"{scenario}: {res['requests']} requests, {total} instructions, {total / max(res['requests'], 1):.0f} instructions/request")
PY
