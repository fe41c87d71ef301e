#!/usr/bin/env python3
"""One upstream instance for tests/endpoints.rs: a real process that can be
killed with kill -9 and started again on the same port.

usage: upstream.py PORT DELAY_MS [HOST [WORKERS]]   (PORT 0: any free
port; HOST 127.0.0.1 unless given, another loopback address for a dns
test; WORKERS 0, the default, for no cap: with N, at most N requests are
served at once and the rest wait their turn, a finite capacity of
N / DELAY a second whose latency climbs past N in flight)

Prints "listening PORT" once bound. Every request sleeps DELAY_MS (or
?ms=N) and answers 200 with the port as body. Each served request is
recorded as (key, start_ns, end_ns, ring_version), key the X-Tenant-Id
header, times on CLOCK_MONOTONIC (one clock for every process on the
host); GET /__records returns them as JSON lines.
"""
import http.server
import json
import sys
import threading
import time
import urllib.parse

PORT = int(sys.argv[1])
DELAY = float(sys.argv[2]) / 1000.0
HOST = sys.argv[3] if len(sys.argv) > 3 else "127.0.0.1"
WORKERS = int(sys.argv[4]) if len(sys.argv) > 4 else 0
SLOTS = threading.BoundedSemaphore(WORKERS) if WORKERS > 0 else None
RECORDS = []
LOCK = threading.Lock()


def now_ns():
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # One write per response, sent at once: without these, the body waits
    # for the ACK of the headers (Nagle against delayed ACK, ~40 ms).
    disable_nagle_algorithm = True
    wbufsize = 65536

    def log_message(self, *args):
        pass

    def reply(self, body):
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/__records":
            with LOCK:
                body = "".join(json.dumps(r) + "\n" for r in RECORDS).encode()
            return self.reply(body)
        delay = DELAY
        q = urllib.parse.parse_qs(url.query)
        if "ms" in q:
            delay = float(q["ms"][0]) / 1000.0
        start = now_ns()
        if SLOTS is not None:
            with SLOTS:
                time.sleep(delay)
        else:
            time.sleep(delay)
        end = now_ns()
        with LOCK:
            RECORDS.append(
                {
                    "key": self.headers.get("x-tenant-id"),
                    "start": start,
                    "end": end,
                    "version": self.headers.get("x-floodwall-ring-version"),
                }
            )
        self.reply(str(self.server.server_address[1]).encode())


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256


server = Server((HOST, PORT), Handler)
print("listening", server.server_address[1], flush=True)
server.serve_forever()
