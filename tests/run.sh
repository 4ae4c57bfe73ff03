#!/usr/bin/env bash
# Runs every test: installs what the tests need, checks formatting and lints, builds
# the binaries, checks every shipped config, then runs unit and end-to-end tests
# (real gateway and upstream-api processes on 127.0.0.1).
set -euo pipefail
cd "$(dirname "$0")/.."
# promtool checks the alert rules; pebble is the ACME server; openssl is a TLS client;
# redis-server is the shared store of the cluster tests; bind9 (named, tsig-keygen) and
# bind9-dnsutils (dig) are the DNS server DNS-01 updates; python3-h2 sends raw HTTP/2 frames;
# zstd, brotli and gzip decode compressed responses as users' tools do;
# docker-compose and debootstrap build and run the Compose stack on the Docker engine;
# chromium renders the status page.
bash tests/deps.sh prometheus pebble bind9 bind9-dnsutils openssl redis-server python3-h2 zstd brotli gzip docker-compose debootstrap slowhttptest testssl.sh chromium

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build --workspace --bins

echo "== gateway check on every config under config/"
# The secrets gateway.cluster.toml and examples/saas.toml name come from the environment
# at run time; any well-formed value will do for the check.
export STORE_PASSWORD=check-only STORE_KEY=MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY= DNS_TSIG_SECRET=Y2hlY2stb25seQ==
find config -name '*.toml' -print0 | sort -z | while IFS= read -r -d '' f; do
  target/debug/gateway check --config "$f"
done
unset STORE_PASSWORD STORE_KEY DNS_TSIG_SECRET

echo "== images for the Compose test (base images made here; layer-cached)"
# Built before the tests start, so the first (long) build does not share the machine
# with timing-sensitive tests; the Compose test finds them ready.
bash tests/compose/build.sh

echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
