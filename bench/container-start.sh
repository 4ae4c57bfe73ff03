#!/usr/bin/env bash
# The gateway image's size and start time: from `docker run` to the first answer on
# its published port, median of 10 starts (docs/deploy.md, "Image size and start").
# Needs the image: tests/compose/build.sh. Usage: bench/container-start.sh
set -euo pipefail
cd "$(dirname "$0")/.."
image=edge-gateway:0.1.0
docker image inspect "$image" >/dev/null 2>&1 || { echo "build it first: tests/compose/build.sh" >&2; exit 1; }
dir=$(mktemp -d)
trap 'docker rm -f gateway-start-bench >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
cat > "$dir/gateway.toml" <<'TOML'
[[listeners]]
address = "0.0.0.0:8080"
[pools.p]
replicas = ["127.0.0.1:9"]
[[routes]]
pool = "p"
TOML
chmod -R a+rX "$dir"
echo "image $image: $(docker image inspect -f '{{.Size}}' "$image" | numfmt --to=si)B" \
  "(edge-upstream-api: $(docker image inspect -f '{{.Size}}' edge-upstream-api:0.1.0 2>/dev/null | numfmt --to=si)B)"
python3 - "$dir" "$image" <<'PY'
import statistics, subprocess, sys, time, urllib.request, urllib.error
d, image = sys.argv[1], sys.argv[2]
runs, answers = [], []
for _ in range(10):
    subprocess.run(["docker", "rm", "-f", "gateway-start-bench"], capture_output=True)
    t0 = time.monotonic()
    subprocess.run(["docker", "run", "-d", "--name", "gateway-start-bench", "--read-only",
                    "-p", "127.0.0.1:18080:8080", "-v", f"{d}/gateway.toml:/c.toml:ro",
                    image, "run", "--config", "/c.toml"], check=True, capture_output=True)
    t1 = time.monotonic()
    while True:
        try:
            urllib.request.urlopen("http://127.0.0.1:18080/", timeout=1)
            break
        except urllib.error.HTTPError:
            break                      # any HTTP answer (here a 503: no replica) counts
        except Exception:
            time.sleep(0.005)
    t2 = time.monotonic()
    runs.append(t1 - t0)
    answers.append(t2 - t0)
rss = subprocess.run(["docker", "stats", "--no-stream", "--format", "{{.MemUsage}}",
                      "gateway-start-bench"], capture_output=True, text=True).stdout.strip()
print(f"docker run returns after {statistics.median(runs)*1000:.0f} ms (median of 10); "
      f"first answer {statistics.median(answers)*1000:.0f} ms after docker run; "
      f"memory when idle: {rss}")
PY
