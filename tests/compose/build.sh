#!/usr/bin/env bash
# Builds what the Compose test runs, with no registry: the base images (made here when
# missing, tests/base-images.sh), the gateway and API images from the repository's own
# Dockerfiles (as `docker compose build` builds them for users), and the test-only
# Pebble and Redis images. Layer-cached: an unchanged tree takes seconds. Afterwards it removes
# the untagged images its own builds left more than a day ago (by label), nothing else:
# the recent ones are the layer cache (a build stage is untagged once its binary is
# copied out).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(docker info -f '{{.DockerRootDir}}' 2>/dev/null) \
  || { echo "compose build: no Docker engine answers" >&2; exit 1; }
free=$(df --output=avail -B1G "$root" | tail -1 | tr -d ' ')
if [ "$free" -lt 8 ]; then
  echo "compose build: only ${free} GiB free under $root; the base images, the builds and" >&2
  echo "the stack need about 8 GiB (docker image prune; docker builder prune)" >&2
  exit 1
fi
bash tests/base-images.sh
docker-compose -f compose.yml build -q gateway api
docker build -q -t edge-test-pebble:local -f tests/compose/Dockerfile.pebble tests/compose >/dev/null
docker build -q -t edge-test-redis:local -f tests/compose/Dockerfile.redis tests/compose >/dev/null
docker image prune -f --filter label=dev.edge-gateway.build --filter until=24h >/dev/null
