#!/usr/bin/env python3
"""A real server for the lab: answers every request with its own name.

GET /           -> "<name>\n"
GET /slow?s=N   -> streams N seconds of data (one chunk every 100 ms), then
                   "<name> done\n": a long-lived connection for restart tests.
GET /big?kb=N   -> N KiB at once (full-size segments), then "<name> done\n".
Binds to 0.0.0.0 so that it also answers on the VIP held on loopback.
"""
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

NAME = sys.argv[1]
PORT = int(sys.argv[2]) if len(sys.argv) > 2 else 80


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        url = urlparse(self.path)
        if url.path == "/slow":
            seconds = min(float(parse_qs(url.query).get("s", ["5"])[0]), 60.0)
            chunks = int(seconds * 10)
            chunk = b"x" * 1023 + b"\n"
            tail = f"{NAME} done\n".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(chunks * len(chunk) + len(tail)))
            self.end_headers()
            for _ in range(chunks):
                self.wfile.write(chunk)
                self.wfile.flush()
                time.sleep(0.1)
            self.wfile.write(tail)
            return
        if url.path == "/big":
            kb = min(int(parse_qs(url.query).get("kb", ["64"])[0]), 10240)
            body = b"y" * (kb * 1024) + f"{NAME} done\n".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        body = f"{NAME}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("0.0.0.0", PORT), Handler).serve_forever()
