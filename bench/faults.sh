#!/usr/bin/env bash
# Replica faults (SIGKILL and restart; rolling restart) under load through the gateway,
# nginx and Caddy, side by side: about 2 minutes, loopback only.
# Results: bench/results/faults.md; docs/reliability.md quotes them.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/prepare.sh nginx caddy wrk
python3 bench/faults.py
