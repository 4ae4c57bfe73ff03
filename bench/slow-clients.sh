#!/usr/bin/env bash
# Slowloris and slow-body attacks (slowhttptest) against the gateway, nginx and Caddy
# with their default client timeouts, side by side: about 4 minutes, loopback only.
# Results: bench/results/slow-clients.md; docs/reliability.md quotes them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/deps.sh nginx caddy slowhttptest
for svc in nginx caddy; do
  systemctl stop "$svc" 2>/dev/null || service "$svc" stop 2>/dev/null || true
done
cargo build --release -p gateway -p upstream-api 2>&1 | tail -1
export PATH="$PWD/target/release:$PATH"
python3 bench/slow_clients.py
