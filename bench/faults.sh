#!/usr/bin/env bash
# Replica faults (SIGKILL and restart; rolling restart) under load through the gateway,
# nginx and Caddy, side by side: about 2 minutes, loopback only.
# Results: bench/results/faults.md; docs/reliability.md quotes them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/deps.sh nginx caddy wrk
for svc in nginx caddy; do
  systemctl stop "$svc" 2>/dev/null || service "$svc" stop 2>/dev/null || true
done
cargo build --release -p gateway -p upstream-api 2>&1 | tail -1
export PATH="$PWD/target/release:$PATH"
python3 bench/faults.py
