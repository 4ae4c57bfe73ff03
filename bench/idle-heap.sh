#!/usr/bin/env bash
# Where an idle client connection's memory goes: the gateway (release, system
# allocator) under valgrind's dhat, 2,000 connections opened that send nothing; the
# heap at its peak, by allocation site, divided by the connections. About 5 minutes.
# Usage: bench/idle-heap.sh [connections] [plain|tls|h2]
# (`tls`: handshake done, nothing sent; `h2`: preface and SETTINGS, then nothing)
set -euo pipefail
cd "$(dirname "$0")/.."
CONNS="${1:-2000}"
KIND="${2:-plain}"
bash tests/deps.sh valgrind
cargo build --release -p gateway --features system-allocator 2>&1 | tail -1
RUN="$(mktemp -d /tmp/gateway-heap.XXXXXX)"
trap 'python3 bench/measure.py --run "$RUN" --stop-all' EXIT
python3 - "$RUN" "$CONNS" "$KIND" <<'PY'
import asyncio, json, resource, signal, socket, sys, time
sys.path.insert(0, "bench")
import measure
run, conns, kind = sys.argv[1], int(sys.argv[2]), sys.argv[3]
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
measure.setup(run)
cfg = f"{run}/gateway.toml"
# Handshakes under valgrind are slow: the head deadline must not close the first
# connections before the last ones are open.
open(cfg, "w").write(measure.gateway_config(run, False) + "[limits]\nheader_timeout = \"300s\"\n")
out = f"{run}/dhat.json"
gw = measure.spawn(run, "gateway-dhat", ["valgrind", "--tool=dhat", f"--dhat-out-file={out}",
                   "target/release/gateway", "run", "--config", cfg], 1, log=f"{run}/gateway.log")
assert measure.wait_port(measure.PORTS["gateway"][0], timeout=120), "gateway under valgrind did not start"
time.sleep(2)
if kind == "plain":
    socks = [socket.create_connection(("127.0.0.1", measure.PORTS["gateway"][0]), timeout=5) for _ in range(conns)]
    time.sleep(5)  # every connection accepted and waiting for its first request byte
    gw.send_signal(signal.SIGINT)  # pingora: fast shutdown; dhat writes its file at exit
    gw.wait(timeout=120)
else:
    async def hold():
        opened, errors, _ = await measure.open_idle_tls(measure.PORTS["gateway"][1], kind, conns)
        assert not errors, errors[0]
        await asyncio.sleep(5)
        gw.send_signal(signal.SIGINT)
        await asyncio.to_thread(gw.wait, 120)
        for _, w in opened:
            w.close()
    asyncio.run(hold())
    socks = []
for s in socks:
    s.close()
d = json.load(open(out))
ftbl = d["ftbl"]
def site(pp):
    # the first frames that are not the allocator itself
    frames = [ftbl[i] for i in pp["fs"]]
    skip = ("alloc::", "malloc", "realloc", "calloc", "__rust", "<alloc::", "core::ptr", "hashbrown::raw")
    names = [f.split(": ", 1)[-1] for f in frames]
    keep = [n for n in names if not n.startswith(skip)]
    return " <- ".join(n[:90] for n in keep[:4])
pps = sorted(d["pps"], key=lambda p: -p.get("gb", 0))
total = sum(p.get("gb", 0) for p in d["pps"])
print(f"heap at its peak: {total/1024/1024:.1f} MiB with {conns} idle connections "
      f"(~{total/conns:.0f} bytes per connection, before the baseline is subtracted)")
print(f"{'bytes at peak':>14} {'blocks':>7} {'bytes/conn':>10}  site")
for p in pps[:25]:
    gb, gbk = p.get("gb", 0), p.get("gbk", 0)
    print(f"{gb:>14} {gbk:>7} {gb/conns:>10.0f}  {site(p)}")
PY
