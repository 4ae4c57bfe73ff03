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
  curl -fsS -o /dev/null http://127.0.0.1:8080/healthz 2>/dev/null && break
  sleep 0.1
done
cat <<MSG

  gateway ready:  http://localhost:8080/api/whoami
  try:            curl -s http://localhost:8080/api/whoami
                  curl -s -X POST -H 'content-type: application/json' -d '{"name":"tea"}' http://localhost:8080/api/items
  stop:           Ctrl-C

MSG
wait
