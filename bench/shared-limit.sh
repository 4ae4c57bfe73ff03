#!/usr/bin/env bash
# What a rate limit counted in Redis (scope = "cluster") costs next to the same limit
# counted locally, with nginx's limit_req as the reference, in the same rounds
# (about 7 minutes). Results: bench/results/shared-limit.md.
#   ROUNDS=5 DURATION=20 bench/shared-limit.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUN="$(mktemp -d /tmp/gateway-shared-limit.XXXXXX)"
trap 'python3 bench/measure.py --run "$RUN" --stop-all' EXIT
source bench/prepare.sh nginx wrk redis-server
systemctl stop redis-server 2>/dev/null || service redis-server stop 2>/dev/null || true
python3 bench/shared-limit.py --run "$RUN" --rounds "${ROUNDS:-3}" --duration "${DURATION:-10}" --out bench/results
