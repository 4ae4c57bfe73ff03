#!/usr/bin/env bash
# Starts the local stack without Docker: three upstream-api replicas on
# 127.0.0.1:8001-8003 and the gateway with config/gateway.toml on
# http://localhost:8080. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/deps.sh
cargo build --workspace --bins

pids=()
cleanup() {
  trap - INT TERM EXIT
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "stack stopped"
}
trap cleanup INT TERM EXIT

for i in 1 2 3; do
  REPLICA_ID="api-$i" target/debug/upstream-api --listen "127.0.0.1:800$i" &
  pids+=($!)
done
target/debug/gateway run --config config/gateway.toml &
pids+=($!)

for _ in $(seq 1 100); do
  curl -fsS -o /dev/null --cacert certs/internal/ca.pem https://localhost:8443/healthz 2>/dev/null && break
  sleep 0.1
done
cat <<MSG

  gateway ready:  https://localhost:8443/api/whoami   (http://localhost:8080 redirects there)
  try:            curl --cacert certs/internal/ca.pem https://localhost:8443/api/whoami
                  curl --cacert certs/internal/ca.pem -X POST -H 'content-type: application/json' \
                       -d '{"name":"tea"}' https://localhost:8443/api/items
  metrics:        curl http://127.0.0.1:9901/metrics
  trust the local CA in browsers: see docs/tls.md
  stop:           Ctrl-C

MSG
wait
