#!/usr/bin/env python3
"""A HAProxy-style agent for the lab: every connection gets one line, the
current content of STATE_FILE ("up", "drain", "75%", ...), then close."""
import socketserver
import sys

PORT = int(sys.argv[1])
STATE_FILE = sys.argv[2]


class Agent(socketserver.BaseRequestHandler):
    def handle(self):
        try:
            with open(STATE_FILE) as f:
                state = f.read().strip()
        except OSError:
            state = "down"
        self.request.sendall((state + "\n").encode())


socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer(("0.0.0.0", PORT), Agent).serve_forever()
