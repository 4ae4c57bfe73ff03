#!/usr/bin/env bash
# Slowloris and slow-body attacks (slowhttptest) against the gateway, nginx and Caddy
# with their default client timeouts, side by side: about 4 minutes, loopback only.
# Results: bench/results/slow-clients.md; docs/reliability.md quotes them.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/prepare.sh nginx caddy slowhttptest
python3 bench/slow_clients.py
