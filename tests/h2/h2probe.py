#!/usr/bin/python3
"""A frame-level HTTP/2 client for the gateway's tests (Debian's python3-h2): what
client libraries never send. Connects over TLS (ALPN h2) to 127.0.0.1:PORT with SNI
NAME, runs one scenario, and prints one JSON object with what the server did.

  h2probe.py PORT NAME CA SCENARIO [ARGS...]

Scenarios (each bounded in frames and time):
  cancel PATH N          N streams: HEADERS, 200 ms, RST_STREAM(CANCEL)
  idle SECONDS [silent]  preface + SETTINGS, then nothing: when and how the server closes
                         (`silent`: not even acknowledging the server's PING)
  rapid-reset N          N streams opened and reset at once (CVE-2023-44487)
  continuation N         HEADERS without END_HEADERS, then N CONTINUATION frames
  settings-flood N       N SETTINGS frames without waiting for ACKs
  ping-flood N           N PING frames
  hpack-bomb N           one header block referring N times to a 4 KiB table entry
  streams-over-limit N   N streams left open at once (beyond MAX_CONCURRENT_STREAMS)
"""

import json
import socket
import ssl
import sys
import time

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from hpack import Encoder


def connect(port, name, ca):
    ctx = ssl.create_default_context(cafile=ca)
    ctx.set_alpn_protocols(["h2"])
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    s = ctx.wrap_socket(raw, server_hostname=name)
    assert s.selected_alpn_protocol() == "h2", s.selected_alpn_protocol()
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    s.sendall(conn.data_to_send())
    return s, conn


def headers(name, path, rid=None):
    h = [(":method", "GET"), (":path", path), (":scheme", "https"), (":authority", name)]
    if rid:
        h.append(("x-request-id", rid))
    return h


GOAWAYS = []  # error codes of every GOAWAY frame seen on the wire
GOAWAY_AT = []  # when the first one came
RESETS = []  # error codes of every RST_STREAM frame seen on the wire
_raw = bytearray()
# The socket, and whether PINGs are answered even after the h2 library gave up (a
# well-behaved client acknowledges a PING at once; `idle SECONDS silent` does not).
SOCK = [None]
ACK_PINGS = [True]


def scan(data):
    """Notes GOAWAY frames as they arrive, whatever the h2 library makes of them (it
    stops parsing at the first frame it finds out of order, such as the PING the server
    sends with its GOAWAY)."""
    _raw.extend(data)
    while len(_raw) >= 9:
        n = int.from_bytes(_raw[0:3], "big")
        if len(_raw) < 9 + n:
            break
        if _raw[3] == 7 and n >= 8:
            GOAWAYS.append(int.from_bytes(_raw[13:17], "big"))
            GOAWAY_AT.append(time.monotonic())
        if _raw[3] == 3 and n == 4:
            RESETS.append(int.from_bytes(_raw[9:13], "big"))
        if _raw[3] == 6 and not _raw[4] & 1 and n == 8 and ACK_PINGS[0] and SOCK[0]:
            try:
                SOCK[0].sendall(b"\x00\x00\x08\x06\x01\x00\x00\x00\x00" + bytes(_raw[9:17]))
            except OSError:
                pass
        del _raw[: 9 + n]


def NEVER(events):
    return False


def pump(s, conn, seconds, until=None):
    """Reads for up to `seconds` (or until `until(events)`, or a GOAWAY); returns
    (events, closed), closed meaning the server closed the connection. Once the h2
    library gives up on what it reads, the rest is only scanned for GOAWAYs."""
    events, deadline, broken = [], time.monotonic() + seconds, False
    while time.monotonic() < deadline:
        s.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = s.recv(65536)
        except socket.timeout:
            break
        except (ConnectionError, ssl.SSLError, OSError):
            return events, True
        if not data:
            return events, True
        scan(data)
        if not broken:
            try:
                events += conn.receive_data(data)
            except Exception as e:
                events.append(("client-parse-error", str(e)))
                broken = True
            out = conn.data_to_send()
            if out and not broken:
                try:
                    s.sendall(out)
                except OSError:
                    return events, True
        if until is not None and (until(events) or (GOAWAYS and until is not NEVER)):
            break
    return events, False


def flood(s, frame, n):
    """Sends `frame` up to `n` times, stopping when the server closes; returns how many went."""
    sent = 0
    try:
        for _ in range(n):
            s.sendall(frame)
            sent += 1
    except OSError:
        pass
    return sent


def summary(events, closed, **extra):
    goaway = [e.error_code.name for e in events if isinstance(e, h2.events.ConnectionTerminated)]
    goaway += [h2.errors.ErrorCodes(c).name if c in iter(h2.errors.ErrorCodes) else str(c) for c in GOAWAYS]
    # From the wire: the library may have stopped parsing (streams it did not open).
    resets = RESETS
    responses = [e for e in events if isinstance(e, h2.events.ResponseReceived)]
    out = {
        "closed": closed,
        "goaway": goaway[0] if goaway else None,
        "resets": len(resets),
        "refused": sum(1 for c in resets if c == h2.errors.ErrorCodes.REFUSED_STREAM),
        "responses": len(responses),
    }
    out.update(extra)
    return out


def main():
    port, name, ca, scenario = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    args = sys.argv[5:]
    s, conn = connect(port, name, ca)
    SOCK[0] = s
    pump(s, conn, 0.3)
    if scenario == "cancel":
        path, n = args[0], int(args[1])
        for i in range(n):
            sid = conn.get_next_available_stream_id()
            conn.send_headers(sid, headers(name, path, f"h2-cancel-{i}"), end_stream=True)
            s.sendall(conn.data_to_send())
            pump(s, conn, 0.2)
            conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
            s.sendall(conn.data_to_send())
        events, closed = pump(s, conn, 0.5)
        print(json.dumps(summary(events, closed, sent=n)))
    elif scenario == "idle":
        limit = float(args[0])
        ACK_PINGS[0] = "silent" not in args
        started = time.monotonic()
        events, closed = pump(s, conn, limit, until=lambda ev: any(isinstance(e, h2.events.ConnectionTerminated) for e in ev))
        if not closed:
            # After its GOAWAY the server closes: at once for a client that answers
            # its PING, within a few seconds for one that does not.
            more, closed = pump(s, conn, 8.0, until=NEVER)
            events += more
        goaway_after = round(GOAWAY_AT[0] - started, 2) if GOAWAY_AT else None
        print(json.dumps(summary(events, closed, after=round(time.monotonic() - started, 2), goaway_after=goaway_after)))
    elif scenario == "rapid-reset":
        n = int(args[0])
        sent = 0
        try:
            for _ in range(n):
                sid = conn.get_next_available_stream_id()
                conn.send_headers(sid, headers(name, "/api/whoami"), end_stream=True)
                conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
                sent += 1
                if sent % 100 == 0:
                    s.sendall(conn.data_to_send())
            s.sendall(conn.data_to_send())
        except (OSError, h2.exceptions.ProtocolError):
            pass
        events, closed = pump(s, conn, 3.0)
        print(json.dumps(summary(events, closed, sent=sent)))
    elif scenario == "continuation":
        n = int(args[0])
        enc = Encoder()
        block = enc.encode(headers(name, "/api/whoami"))
        # HEADERS (type 1) on stream 1 without END_HEADERS, then CONTINUATION (type 9).
        frame = lambda t, flags, sid, payload: len(payload).to_bytes(3, "big") + bytes([t, flags]) + sid.to_bytes(4, "big") + payload
        sent = 0
        try:
            s.sendall(frame(1, 0x1, 1, block))
            junk = b"\x40\x05x-pad\x0a" + b"a" * 10
            for _ in range(n):
                s.sendall(frame(9, 0x0, 1, junk))
                sent += 1
        except OSError:
            pass
        events, closed = pump(s, conn, 3.0)
        print(json.dumps(summary(events, closed, sent=sent)))
    elif scenario in ("settings-flood", "ping-flood"):
        if scenario == "settings-flood":
            # SETTINGS, 6 bytes: INITIAL_WINDOW_SIZE = 65535
            frame = (6).to_bytes(3, "big") + bytes([4, 0]) + (0).to_bytes(4, "big") + (4).to_bytes(2, "big") + (65535).to_bytes(4, "big")
        else:
            frame = (8).to_bytes(3, "big") + bytes([6, 0]) + (0).to_bytes(4, "big") + b"12345678"
        sent = flood(s, frame, int(args[0]))
        events, closed = pump(s, conn, 3.0)
        print(json.dumps(summary(events, closed, sent=sent)))
    elif scenario == "hpack-bomb":
        n = int(args[0])
        enc = Encoder()
        big = ("x-bomb", "b" * 4000)
        first = headers(name, "/api/whoami") + [big]
        sid = conn.get_next_available_stream_id()
        # The first block adds the big header to the dynamic table; the second refers to
        # it N times (one byte each): kilobytes on the wire, megabytes decoded.
        b1 = enc.encode(first)
        b2 = enc.encode(headers(name, "/api/whoami") + [big] * n)
        frame = lambda t, flags, sid, payload: len(payload).to_bytes(3, "big") + bytes([t, flags]) + sid.to_bytes(4, "big") + payload
        try:
            s.sendall(frame(1, 0x5, sid, b1))
            s.sendall(frame(1, 0x5, sid + 2, b2))
        except OSError:
            pass
        events, closed = pump(s, conn, 3.0)
        print(json.dumps(summary(events, closed, encoded=len(b2), decoded=4006 * n)))
    elif scenario == "streams-over-limit":
        n = int(args[0])
        enc = Encoder()
        frame = lambda t, flags, sid, payload: len(payload).to_bytes(3, "big") + bytes([t, flags]) + sid.to_bytes(4, "big") + payload
        opened = 0
        try:
            # Raw HEADERS without END_STREAM on odd stream ids: the library would refuse
            # to open more than the server allows, which is the point of the test.
            for i in range(n):
                s.sendall(frame(1, 0x4, 1 + 2 * i, enc.encode(headers(name, "/api/whoami"))))
                opened += 1
        except OSError:
            pass
        events, closed = pump(s, conn, 3.0)
        limit = conn.remote_settings.max_concurrent_streams
        print(json.dumps(summary(events, closed, opened=opened, max_concurrent_streams=limit)))
    else:
        raise SystemExit(f"unknown scenario {scenario}")


if __name__ == "__main__":
    main()
