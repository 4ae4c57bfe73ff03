#!/usr/bin/env bash
# Measures a change we propose to Pingora before proposing it: applies
# bench/pingora-patches/NAME.patch to copies of the locked Pingora crates' sources,
# builds the gateway against them (release; a target dir of its own, so
# target/release keeps the unpatched build) and counts instructions per request with
# bench/callgrind.sh, patched and unpatched in the same run, then req/s and CPU per
# request from wrk in alternating rounds (ROUNDS, default 3; 10 s each).
# Usage: bench/pingora-patched.sh NAME [plain|policy]   (about 17 minutes the first time)
#        TARGET=bare-pingora bench/pingora-patched.sh NAME [plain|https|h2]
#        (the floor, gateway/examples/bare_pingora.rs: instructions only, for a patch to
#        code the gateway itself no longer runs)
set -euo pipefail
cd "$(dirname "$0")/.."
NAME="${1:?usage: bench/pingora-patched.sh NAME [plain|policy]}"
SCENARIO="${2:-plain}"
PATCH="bench/pingora-patches/$NAME.patch"
[ -f "$PATCH" ] || { echo "no such patch: $PATCH" >&2; exit 2; }
bash tests/deps.sh patch valgrind nginx wrk

WORK="$(mktemp -d /tmp/pingora-patched.XXXXXX)"
# Building with a `[patch]` rewrites Cargo.lock's entries for the patched crates; the
# repository's lock file is put back however the script ends.
cp Cargo.lock "$WORK/Cargo.lock.orig"
trap 'cp "$WORK/Cargo.lock.orig" Cargo.lock' EXIT

cargo fetch --locked -q
# Patch paths name the crate first (a/pingora-core/src/...); each crate is copied from
# the registry at the version Cargo.lock pins.
args=()
for crate in $(sed -n 's|^+++ b/\([^/]*\)/.*|\1|p' "$PATCH" | sort -u); do
  src="$(cargo metadata --format-version 1 --locked | python3 -c '
import json, os, sys
name = sys.argv[1]
pkgs = [p for p in json.load(sys.stdin)["packages"] if p["name"] == name]
assert len(pkgs) == 1, f"{name}: {len(pkgs)} versions in the lock file"
print(os.path.dirname(pkgs[0]["manifest_path"]))' "$crate")"
  cp -r "$src" "$WORK/$crate"
  args+=(--config "patch.crates-io.$crate.path=\"$WORK/$crate\"")
done
patch -p1 -d "$WORK" < "$PATCH"

export TARGET="${TARGET:-gateway}"
if [ "$TARGET" = bare-pingora ]; then
  build=(--example bare_pingora) patched=target/pingora-patched/release/examples/bare_pingora
else
  build=() patched=target/pingora-patched/release/gateway
fi
CARGO_TARGET_DIR=target/pingora-patched cargo build --release -p gateway "${build[@]}" "${args[@]}" 2>&1 | tail -1
cp "$WORK/Cargo.lock.orig" Cargo.lock

echo "== unpatched"
bench/callgrind.sh "$SCENARIO" | tail -1
echo "== with $NAME.patch"
GATEWAY_BIN="$patched" bench/callgrind.sh "$SCENARIO" | tail -1
# The floor is measured by instructions only: the wall-clock rounds below run the gateway.
[ "$TARGET" = gateway ] || exit 0

echo "== wall clock, alternating rounds ($SCENARIO, wrk 1 thread, 50 connections, 10 s)"
RUN="$WORK/run"
mkdir -p "$RUN"
trap 'python3 bench/measure.py --run "$RUN" --stop-all; cp "$WORK/Cargo.lock.orig" Cargo.lock' EXIT
python3 - "$RUN" "${ROUNDS:-3}" "$SCENARIO" <<'PY'
import os, statistics, sys
sys.path.insert(0, "bench")
import measure
run, rounds, scenario = sys.argv[1], int(sys.argv[2]), sys.argv[3]
builds = {"unpatched": "target/release", "patched": "target/pingora-patched/release"}
measure.setup(run)
up = measure.start_upstreams(run)
path = os.environ["PATH"]
seen = {b: [] for b in builds}
for r in range(rounds):
    order = list(builds) if r % 2 == 0 else list(reversed(builds))
    for build in order:
        os.environ["PATH"] = f"{os.path.abspath(builds[build])}:{path}"
        gw = measure.start_target(run, "gateway", scenario == "policy")
        measure.run_wrk(f"http://127.0.0.1:{measure.PORTS['gateway'][0]}/", 2, 50)  # warm up
        res = measure.measure(run, "gateway", gw, "policy" if scenario == "policy" else "http", 10, 50)
        measure.stop(gw)
        seen[build].append(res)
        print(f"round {r + 1} {build}: {res['rps']:.0f} req/s, {res['cpu_us_per_req']:.1f} us/req")
for build, rs in seen.items():
    print(f"median {build}: {statistics.median(x['rps'] for x in rs):.0f} req/s, "
          f"{statistics.median(x['cpu_us_per_req'] for x in rs):.1f} us CPU/req")
PY
