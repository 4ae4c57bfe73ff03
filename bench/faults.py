#!/usr/bin/env python3
"""Replica faults under load, side by side: the gateway, nginx and Caddy in front of
three upstream-api replicas, wrk sending GETs throughout, while (1) one replica is
killed with SIGKILL and started again, and (2) every replica is restarted in turn
(SIGTERM: upstream-api reports not-ready for 1.5 s, finishes in-flight requests, exits).
Counts what wrk saw fail. Run by `bench/faults.sh`; writes bench/results/faults.md.
Loopback only, bounded (about 2 minutes), stops only what it started."""

import re, signal, subprocess, sys, tempfile, threading, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import measure

PORTS = measure.API_UPSTREAMS
TARGETS = ("gateway", "nginx", "caddy")


def start_api(run, i):
    p = measure.spawn(run, f"api{i}", ["upstream-api", "--listen", f"127.0.0.1:{PORTS[i]}",
                                       "--replica-id", f"r{i}", "--drain-delay", "1500ms"], 0)
    assert measure.wait_port(PORTS[i]), f"replica {i} did not start"
    return p


def kill_one(run, apis):
    time.sleep(2)
    apis[1].send_signal(signal.SIGKILL)
    apis[1].wait()
    time.sleep(3)
    apis[1] = start_api(run, 1)


def rolling(run, apis):
    time.sleep(1)
    for i in range(len(apis)):
        apis[i].send_signal(signal.SIGTERM)
        apis[i].wait(timeout=15)
        apis[i] = start_api(run, i)
        time.sleep(2)  # back in rotation (health interval 1 s) before the next one


SCENARIOS = {"replica killed (SIGKILL) and restarted": (kill_one, 9),
             "rolling restart of all three": (rolling, 16)}


def wrk(port, seconds):
    out = subprocess.run(["taskset", "-c", "0", "wrk", "-t1", "-c8", f"-d{seconds}s",
                          f"http://127.0.0.1:{port}/api/whoami"],
                         capture_output=True, text=True, timeout=seconds + 30).stdout
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    sock = sum(map(int, m.groups())) if (m := re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)) else 0
    return total, non2xx, sock


def run_one(run, target, fault, seconds):
    apis = [start_api(run, i) for i in range(len(PORTS))]
    proc = measure.start_target(run, target, False, PORTS, health=True)
    try:
        time.sleep(1.5)  # first health checks done
        t = threading.Thread(target=fault, args=(run, apis))
        t.start()
        total, non2xx, sock = wrk(measure.PORTS[target][0], seconds)
        t.join()
    finally:
        measure.stop(proc)
        for a in apis:
            measure.stop(a)
    return total, non2xx, sock


def main():
    run = tempfile.mkdtemp(prefix="gateway-faults.")
    lines = []
    try:
        measure.setup(run)
        for name, (fault, seconds) in SCENARIOS.items():
            for target in TARGETS:
                total, non2xx, sock = run_one(run, target, fault, seconds)
                lines.append(f"| {name} | {target} | {total} | {non2xx} | {sock} |")
                print(lines[-1], flush=True)
    finally:
        measure.stop_all(run)
    text = f"""# Replica faults side by side

wrk (1 thread, 8 connections, `GET /api/whoami`) through each proxy to three
upstream-api replicas, round robin, while a fault is injected. Active health checks on
`/readyz` every second where the proxy has them (the gateway; Caddy with `health_uri
/readyz`, `health_interval 1s`, as our users' Caddyfiles do with 10 s); nginx (open
source) has passive checks only and is left at its defaults (`proxy_next_upstream
error timeout`, `max_fails=1`, `fail_timeout=10s`). Each proxy otherwise as in
bench/run.sh. A failed request is a non-2xx answer or a socket error seen by wrk.

| fault | target | requests | non-2xx answers | socket errors |
|---|---|---|---|---|
{chr(10).join(lines)}
"""
    out = Path(__file__).parent / "results" / "faults.md"
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
