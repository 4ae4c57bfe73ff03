#!/usr/bin/env python3
"""slowhttptest (slowloris and slow body) against the gateway, nginx and Caddy, each
with its default client timeouts, on this machine in one run: how long the slow
connections are held, and whether a normal client is still served. Run by
`bench/slow-clients.sh`; writes bench/results/slow-clients.md. Loopback only, bounded
(about 4 minutes), stops only what it started."""

import csv, re, subprocess, sys, tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import measure

ATTACKS = {
    # a header line every 5 s, never ending the head
    "slowloris": ["-H", "-t", "GET"],
    # an 8 KiB body sent a few bytes every 5 s
    "slow body": ["-B", "-t", "POST", "-s", "8192"],
}
LENGTH = 30  # seconds per attack
CONNS = 400


def attack(run, target, name, args):
    port = measure.PORTS[target][0]
    prefix = Path(run) / f"{target}-{name.replace(' ', '-')}"
    proc = measure.start_target(run, target, False)
    try:
        out = subprocess.run(["taskset", "-c", "0", "slowhttptest", *args, "-c", str(CONNS), "-r", "200",
                        "-i", "5", "-l", str(LENGTH), "-p", "3", "-x", "10", "-g", "-o", str(prefix),
                        "-u", f"http://127.0.0.1:{port}/api/echo"],
                       capture_output=True, text=True, timeout=LENGTH + 60)
        rows = list(csv.DictReader(open(f"{prefix}.csv")))
    finally:
        measure.stop(proc)
    # Columns: Seconds, Closed, Pending, Connected, Service Available (per second).
    connected = [int(r["Connected"]) for r in rows]
    # slowhttptest writes the connection count there while its probe is answered, 0 not.
    available = [int(r["Service Available"]) for r in rows]
    peak = max(connected, default=0)
    peak_at = connected.index(peak) if peak else 0
    released = next((i for i in range(peak_at, len(connected)) if connected[i] == 0), None)
    report = re.sub(r"\x1b\[[0-9;]*m", "", out.stdout)
    status = next((l.split(":", 1)[1].strip() for l in report.splitlines() if l.startswith("Exit status:")), "?")
    if released is None and status == "No open connections left":
        released = len(rows)  # the last connection closed within the last second
    return {
        "status": status,
        "peak": peak,
        "released_after_s": released,
        "held_at_end": connected[-1] if connected else 0,
        "unavailable_s": sum(1 for a in available if a == 0),
        "seconds": len(rows),
    }


def main():
    run = tempfile.mkdtemp(prefix="gateway-slow.")
    try:
        measure.setup(run)
        # upstream-api replicas: they read request bodies (a fixed-answer nginx would
        # answer before the slow body arrives and end the test early).
        ups = measure.spawn_apis(run, measure.UPSTREAMS)
        lines = []
        for target in ("gateway", "nginx", "caddy"):
            for name, args in ATTACKS.items():
                r = attack(run, target, name, args)
                released = f"{r['released_after_s']} s" if r["released_after_s"] is not None else \
                    f"no ({r['held_at_end']} still open at {r['seconds']} s)"
                lines.append(f"| {name} | {target} | {r['peak']} | {released} | {r['unavailable_s']} | {r['status']} |")
                print(lines[-1], flush=True)
        for up in ups:
            measure.stop(up)
    finally:
        measure.stop_all(run)
    text = f"""# Slow clients side by side

slowhttptest, {CONNS} connections opened at 200/s, one more piece every 5 s, {LENGTH} s per
attack; each proxy with its default client timeouts (gateway: `header_timeout` 15 s,
`body_timeout` 60 s; nginx 1.22: `client_header_timeout` and `client_body_timeout`
60 s; Caddy 2.6: its defaults), three upstream-api replicas behind each (`/api/echo`
reads the whole body). "Unavailable" counts the seconds in which
slowhttptest's own probe request was not answered within 3 s.

| attack | target | slow connections open at peak | all closed by the server after | seconds unavailable | slowhttptest's exit status |
|---|---|---|---|---|---|
{chr(10).join(lines)}
"""
    out = Path(__file__).parent / "results" / "slow-clients.md"
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
