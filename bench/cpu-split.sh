#!/usr/bin/env bash
# User and system CPU time per request of each proxy, beside how idle the other core
# (wrk and the replicas) is, read from /proc around one wrk run per target. Explains the
# system-time gap that callgrind (user space only) cannot see; docs/performance.md
# quotes it. Loopback only, about 15 s per target.
#
#   bench/cpu-split.sh                 # gateway and nginx at saturation
#   RATE=5000 bench/cpu-split.sh       # at a fixed offered rate instead
#   bench/cpu-split.sh gateway haproxy # other targets
#   SCHEME=https RATE=5000 bench/cpu-split.sh gateway bare-pingora nginx
#                                      # over TLS keep-alive (wrk's https), beside the floor
set -euo pipefail
cd "$(dirname "$0")/.."
RUN="$(mktemp -d /tmp/gateway-cpu-split.XXXXXX)"
trap 'python3 bench/measure.py --run "$RUN" --stop-all' EXIT
source bench/prepare.sh nginx caddy haproxy wrk
python3 - "$RUN" "${RATE:-0}" "${SCHEME:-http}" "${@:-gateway nginx}" <<'PY'
import glob, os, sys
sys.path.insert(0, "bench")
import measure
run, rate, scheme = sys.argv[1], int(sys.argv[2]), sys.argv[3]
targets = " ".join(sys.argv[4:]).split()
SECONDS = 8
measure.setup(run)
measure.start_upstreams(run)

def process(pids):
    """(user ticks, system ticks, minor faults, context switches) over all threads."""
    switches = 0
    for pid in pids:
        for status in glob.glob(f"/proc/{pid}/task/*/status"):
            try:
                lines = open(status).read().splitlines()
            except OSError:  # a thread that ended meanwhile
                continue
            switches += sum(int(l.split()[1]) for l in lines
                            if l.startswith(("voluntary_ctxt", "nonvoluntary_ctxt")))
    return (*measure.proc_times(pids), switches)

def core0():
    """(idle + iowait, total) jiffies of core 0, where wrk and the replicas run."""
    for line in open("/proc/stat"):
        if line.startswith("cpu0 "):
            v = [int(x) for x in line.split()[1:]]
            return v[3] + v[4], sum(v)

print(f"{'target':8} {'req/s':>7} {'user us/req':>12} {'sys us/req':>11} "
      f"{'faults/req':>10} {'switches/req':>12} {'core 0 idle':>11}")
for target in targets:
    proc = measure.start_target(run, target, False)
    http, https = measure.PORTS[target]
    # TLS needs the certificate's name; plain HTTP keeps the address the bench uses.
    url = f"https://localhost:{https}/" if scheme == "https" else f"http://127.0.0.1:{http}/"
    measure.run_wrk(url, 2, 50)  # warm up
    pids = measure.tree(proc.pid)
    p0, c0 = process(pids), core0()
    res = measure.run_wrk_rate(url, SECONDS, 50, rate) if rate else measure.run_wrk(url, SECONDS, 50)
    p1, c1 = process(pids), core0()
    n = res["requests"]
    user, system, faults, switches = (b - a for a, b in zip(p0, p1))
    idle = (c1[0] - c0[0]) / max(1, c1[1] - c0[1])
    tick_us = 1e6 / os.sysconf("SC_CLK_TCK")
    print(f"{target:8} {n / SECONDS:7.0f} {user * tick_us / n:12.1f} {system * tick_us / n:11.1f} "
          f"{faults / n:10.3f} {switches / n:12.3f} {idle:11.0%}", flush=True)
    measure.stop(proc)
PY
