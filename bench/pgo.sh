#!/usr/bin/env bash
# Profile-guided builds of the gateway and the floor (bare Pingora), for measuring what
# code layout is worth (docs/performance.md, "What instructions do not count"): an
# instrumented build, a training load (plain HTTP, HTTPS and HTTP/2 keep-alive, 5 s
# each, the bench's own upstreams), then a build laid out by that profile. Loopback
# only, about 15 minutes the first time. Needs rustup's llvm-tools (llvm-profdata must
# match rustc's LLVM; Debian's does not).
#
#   bench/pgo.sh            # builds target/pgo-use/release/{gateway,examples/bare_pingora}
#   GATEWAY_BIN=target/pgo-use/release/gateway bench/callgrind.sh plain
#
# Not how the shipped images are built (yet): see docs/performance.md, "next".
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/prepare.sh nginx wrk nghttp2-client
rustup component add llvm-tools >/dev/null
PROFDATA="$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin/llvm-profdata"
RUN="$(mktemp -d /tmp/gateway-pgo.XXXXXX)"
# A fixed place for the profiles: the flags name it, and cargo rebuilds everything
# when the flags change.
DATA="$PWD/target/pgo-data"
trap 'python3 bench/measure.py --run "$RUN" --stop-all' EXIT
echo "== instrumented build"
RUSTFLAGS="-Cprofile-generate=$DATA/raw" cargo build --release --target-dir target/pgo-gen \
  -p gateway --bin gateway --example bare_pingora 2>&1 | tail -1
# Build scripts of the instrumented build wrote profiles too: start from an empty folder.
rm -rf "$DATA/raw"
echo "== training"
PATH="$PWD/target/pgo-gen/release:$PWD/target/pgo-gen/release/examples:$PATH" python3 - "$RUN" <<'PY'
import os, signal, sys
sys.path.insert(0, "bench")
import measure
run = sys.argv[1]
measure.setup(run)
up = measure.start_upstreams(run)
for target in ("gateway", "bare-pingora"):
    proc = measure.start_target(run, target, False)
    for scenario in ("http", "https", "h2"):
        res = measure.measure(run, target, proc, scenario, 5, 50)
        assert res["errors"] == 0 and res["requests"] > 0, f"{target} {scenario}: {res}"
        print(f"{target} {scenario}: {res['requests']} requests", flush=True)
    # SIGINT: Pingora's fast shutdown exits the process normally, which writes the
    # profile (a SIGKILL after a slow graceful shutdown would lose it).
    os.kill(proc.pid, signal.SIGINT)
    proc.wait(timeout=30)
measure.stop(up)
PY
"$PROFDATA" merge -o "$DATA/merged.profdata" "$DATA"/raw/*.profraw
echo "== profile-guided build ($(ls "$DATA"/raw | wc -l) profiles)"
# Cargo does not see a new profile behind the same flags, and Pingora's layout matters
# as much as ours: everything is rebuilt.
rm -rf target/pgo-use
RUSTFLAGS="-Cprofile-use=$DATA/merged.profdata" cargo build --release --target-dir target/pgo-use \
  -p gateway --bin gateway --example bare_pingora 2>&1 | tail -1
echo "built: target/pgo-use/release/gateway, target/pgo-use/release/examples/bare_pingora"
