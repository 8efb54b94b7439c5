"""A webhook receiver on loopback for notification tests: answers each POST with the next status of
a script (then ``default``), and records what came."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.conftest import free_port


class WebhookReceiver(ThreadingHTTPServer):
    def __init__(self, statuses: list[int] = (), default: int = 200, path: str = "/hook"):
        self.statuses = list(statuses)
        self.bodies: list[dict] = []  # the JSON bodies answered 200, in order
        self.paths: list[str] = []  # the path (and query) of every request
        self.path = path
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.paths.append(self.path)
                status = outer.statuses.pop(0) if outer.statuses else default
                if status == 200:
                    outer.bodies.append(json.loads(raw))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", free_port()), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{self.path}"

    def close(self) -> None:
        self.shutdown()
        self.server_close()
