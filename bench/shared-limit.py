#!/usr/bin/env python3
"""The shared rate limiter's cost (bench/shared-limit.sh): the gateway with one
per-address limit counted locally, the same limit counted in redis-server
(scope = "cluster"), and nginx with `limit_req` as the reference, in the same rounds:
at saturation (50 connections) and at 5,000 requests per second offered (p99, CPU).
The limit never refuses: what is measured is the cost of counting. The gateway is
pinned to core 1; redis-server, the replicas and wrk share core 0."""

import argparse, statistics, subprocess, sys, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import measure  # noqa: E402

STORE_PORT = 9701


def start(run, target):
    http, _ = measure.PORTS["nginx" if target == "nginx" else "gateway"]
    if target == "nginx":
        cfg = Path(run) / "nginx-limit.conf"
        cfg.write_text(measure.nginx_config(run, False, limit_only=True))
        p = measure.spawn(run, "nginx", ["nginx", "-c", str(cfg), "-p", str(run)], 1)
    else:
        scope = target.split("-")[1]
        cfg = Path(run) / f"gateway-{scope}.toml"
        cfg.write_text(measure.gateway_config(run, False, scope=scope, store_port=STORE_PORT))
        p = measure.spawn(run, "gateway", ["gateway", "run", "--config", str(cfg)], 1,
                          log=Path(run) / f"gateway-{scope}.log")
    if not measure.wait_port(http):
        raise SystemExit(f"{target} did not start; see {run}")
    time.sleep(0.5)
    return p


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--out", default="bench/results")
    a = ap.parse_args()
    measure.setup(a.run)
    up = measure.start_upstreams(a.run)
    redis = measure.spawn(a.run, "redis", ["redis-server", "--port", str(STORE_PORT), "--bind", "127.0.0.1",
                                           "--save", "", "--appendonly", "no"], 0)
    assert measure.wait_port(STORE_PORT), "redis-server did not start"
    plan = [(t, s) for t in ("gateway-local", "gateway-cluster", "nginx") for s in ("http", "rate")]
    rounds = []
    for r in range(a.rounds):
        res = {}
        for target, scenario in (plan if r % 2 == 0 else list(reversed(plan))):
            proc = start(a.run, target)
            name = "nginx" if target == "nginx" else "gateway"
            measure.measure(a.run, name, proc, scenario, 2, 50)  # warm-up
            m = measure.measure(a.run, name, proc, scenario, a.duration, 50)
            res[f"{target}/{scenario}"] = m
            print(f"round {r + 1} {target:16} {scenario:5} {m['rps']:>8.0f} req/s  p99 {m['p99_ms']} ms  "
                  f"cpu {m['cpu_us_per_req'] or 0:.1f} us/req  errors {m['errors']}", flush=True)
            measure.stop(proc)
        rounds.append(res)
    measure.stop(redis)
    measure.stop(up)
    med = lambda k, f: statistics.median(r[k][f] for r in rounds if r[k][f] is not None)
    lines = ["| scenario | target | req/s | vs local | p50 ms | p99 ms | CPU us/req | errors |",
             "|---|---|---|---|---|---|---|---|"]
    for scenario in ("http", "rate"):
        local = med(f"gateway-local/{scenario}", "rps")
        for target in ("gateway-local", "gateway-cluster", "nginx"):
            k = f"{target}/{scenario}"
            lines.append(f"| {scenario} | {target} | {med(k, 'rps'):.0f} | {med(k, 'rps') / local:.2f} | "
                         f"{med(k, 'p50_ms'):.2f} | {med(k, 'p99_ms'):.2f} | {med(k, 'cpu_us_per_req'):.1f} | "
                         f"{sum(r[k]['errors'] for r in rounds)} |")
    table = "\n".join(lines)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "shared-limit.md").write_text(
        f"# Shared rate limiter (bench/shared-limit.sh), {a.rounds} rounds of {a.duration} s, medians\n\n"
        f"`http`: 50 connections at saturation; `rate`: 5,000 req/s offered.\n\n{table}\n")
    print(table)


if __name__ == "__main__":
    main()
