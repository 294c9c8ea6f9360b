"""A webhook receiver for the tests: an HTTP server on 127.0.0.1 that records what it is
sent (test_webhooks.py, test_serving.py)."""

import http.server
import threading
from typing import Any


class Receiver:
    """An HTTP server on 127.0.0.1 that answers 503 to the first `failures` requests, then
    204; it keeps every request's headers and body."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.requests: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver.requests.append((dict(self.headers), body))
                self.send_response(503 if len(receiver.requests) <= receiver.failures else 204)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/runs"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
