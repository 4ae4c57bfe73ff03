#!/usr/bin/env bash
# Memory per idle TLS and idle HTTP/2 client connection, the gateway beside nginx (and
# Caddy, HAProxy): N connections that complete the TLS handshake and then send nothing
# (`tls`), or negotiate h2, send the connection preface and SETTINGS, and then nothing
# (`h2`); RSS of the proxy's processes before and with them open. About 3 minutes.
# Usage: bench/idle-tls.sh [connections]   (results: bench/results/idle-tls.md)
set -euo pipefail
cd "$(dirname "$0")/.."
CONNS="${1:-2000}"
RUN="$(mktemp -d /tmp/gateway-idle-tls.XXXXXX)"
trap 'python3 bench/measure.py --run "$RUN" --stop-all' EXIT
source bench/prepare.sh nginx caddy haproxy
python3 - "$RUN" "$CONNS" <<'PY'
import asyncio, resource, sys, time
sys.path.insert(0, "bench")
import measure
run, n = sys.argv[1], int(sys.argv[2])
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
measure.setup(run)
up = measure.start_upstreams(run)
def still_open(conns):
    return sum(1 for r, w in conns if not r.at_eof() and not w.is_closing())


async def measure_one(target, kind):
    proc = measure.start_target(run, target, False)
    await asyncio.sleep(1)
    before = measure.mem_kib(measure.tree(proc.pid), "VmRSS")
    conns, errors, took = await measure.open_idle_tls(measure.PORTS[target][1], kind, n)
    await asyncio.sleep(2)                      # accepted, handshaken, settled
    after = measure.mem_kib(measure.tree(proc.pid), "VmRSS")
    open_now = still_open(conns)
    for r, w in conns:
        w.close()
    measure.stop(proc)
    await asyncio.sleep(0.5)
    per = (after - before) / max(len(conns), 1)
    print(f"{target:8} {kind:4} {len(conns)} open ({open_now} still open), {len(errors)} errors, "
          f"{took:.1f} s to open; RSS {before/1024:.1f} -> {after/1024:.1f} MiB, {per:.1f} KiB per connection",
          flush=True)
    if errors:
        print(f"  first error: {errors[0]!r}", flush=True)
    return (target, kind, len(conns), open_now, before / 1024, after / 1024, per)


async def main():
    rows = []
    for kind in ("tls", "h2"):
        for target in ("gateway", "nginx", "haproxy", "caddy"):
            rows.append(await measure_one(target, kind))
    lines = [f"# Idle TLS and HTTP/2 connections\n",
             f"`bench/idle-tls.sh {n}`: {n} connections per row, opened after the proxy idles; RSS of",
             "the proxy's processes (nginx: master and worker) before and 2 s after the last one opened.\n",
             "| connection | target | open | still open | RSS before MiB | RSS with them MiB | KiB per connection |",
             "|---|---|---|---|---|---|---|"]
    for t, k, c, o, b, a, p in rows:
        lines.append(f"| {k} | {t} | {c} | {o} | {b:.1f} | {a:.1f} | {p:.1f} |")
    open("bench/results/idle-tls.md", "w").write("\n".join(lines) + "\n")
    print("\n".join(lines))


asyncio.run(main())
measure.stop(up)
PY
