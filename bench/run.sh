#!/usr/bin/env bash
# Benchmarks the gateway beside nginx, Caddy and HAProxy on this machine, in the same
# run: one command, bounded (about 22 minutes), loopback only, stopping only what it
# started. Results: bench/results/latest.md (table) and latest.json (raw rounds).
#
#   bench/run.sh                  # 3 rounds, 10 s per measurement
#   ROUNDS=5 DURATION=20 bench/run.sh
#   ONLY=api bench/run.sh         # some scenarios only (results: bench/results/only-api.md)
#   ONLY=http,https,h2 TARGETS=gateway,bare-pingora ROUNDS=5 bench/run.sh
#                                 # some targets only (nginx always runs: the ratios need it)
#
# Layout on the 2 cores: the proxy under test alone on core 1 (one worker / thread);
# the three upstream replicas (one nginx, worker_processes 1, three ports) and the load
# generator on core 0.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-10}"
CONNS="${CONNS:-50}"
RUN="$(mktemp -d /tmp/gateway-bench.XXXXXX)"
trap 'python3 bench/measure.py --run "$RUN" --stop-all' EXIT

source bench/prepare.sh nginx caddy haproxy wrk nghttp2-client


python3 bench/measure.py --run "$RUN" --rounds "$ROUNDS" --duration "$DURATION" --conns "$CONNS" \
  --out bench/results --only "${ONLY:-}" --targets "${TARGETS:-}"
