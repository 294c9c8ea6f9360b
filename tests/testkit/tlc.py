"""Generated months on disk, and a local HTTP server standing in for the TLC's bucket.

The server answers like CloudFront does (byte ranges included), and can be made to misbehave
per file: answer errors before the file, compress on the fly, reset the connection halfway,
send it slowly; or not serve ranges at all. It counts the body bytes it sends for each file.
"""

import dataclasses
import gzip
import http.server
import re
import socket
import struct
import threading
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

from trainer.datasets import Dataset
from trainer.synthetic import generate_month

# Months bigger than this are generated and written in parts, one row group each: a 20 M-row
# month at once would take several GiB to generate.
PART_ROWS = 2_000_000


def write_month(directory: Path, dataset: Dataset, month: str, rows: int, seed: int = 7) -> Path:
    path = directory / f"{dataset.name}_tripdata_{month}.parquet"
    if rows <= PART_ROWS:
        pq.write_table(generate_month(dataset, month, rows, seed), path)
        return path
    writer = None
    for part, start in enumerate(range(0, rows, PART_ROWS)):
        table = generate_month(dataset, month, min(PART_ROWS, rows - start), seed, part=part)
        table = table.replace_schema_metadata(None)  # pandas' metadata differs per part
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    assert writer is not None
    writer.close()
    return path


SLOW_SECONDS = 60.0  # a "slow" file trickles out over this long, at most
RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


@dataclasses.dataclass
class Quirks:
    """How the server misbehaves for one file."""

    # Answers given, one per request, before the file is served: (status, headers).
    answers: list[tuple[int, dict[str, str]]] = dataclasses.field(default_factory=list)
    gzip: bool = False  # compress whole-file answers on the fly (Content-Encoding: gzip)
    reset_after: int | None = None  # reset the connection once, this many bytes into the file
    slow: bool = False


class _Handler(http.server.BaseHTTPRequestHandler):
    server: "_Server"
    protocol_version = "HTTP/1.1"

    def log_message(self, *_: object) -> None:
        pass

    def do_GET(self) -> None:
        name = self.path.lstrip("/")
        path = self.server.root / name
        quirks = self.server.quirks.get(name, Quirks())
        with self.server.lock:
            self.server.requests.append((name, self.headers.get("Range")))
            answer = quirks.answers.pop(0) if quirks.answers else None
        if answer is not None:
            self._send(answer[0], b"", answer[1])
            return
        if not path.is_file():
            self._send(404, b"not found", {})
            return
        data = path.read_bytes()
        wanted = RANGE.match(self.headers.get("Range", "")) if self.server.ranges else None
        if wanted:
            self._send_range(name, data, wanted)
        elif quirks.gzip and "gzip" in self.headers.get("Accept-Encoding", ""):
            body = gzip.compress(data)
            self._send(200, body, {"Content-Encoding": "gzip"}, name=name)
        elif quirks.reset_after is not None:
            quirks.reset_after, cut = None, quirks.reset_after
            self._send_head(200, len(data), {})
            self._write(name, data[:cut])
            self.wfile.flush()
            # SO_LINGER 0: closing sends a TCP reset, as a dropped connection does.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.rfile.close()  # the socket closes (and resets) once no file holds it
            self.connection.close()
        elif quirks.slow:
            self._send_slowly(name, data)
        else:
            self._send(200, data, {}, name=name)

    def _send_range(self, name: str, data: bytes, wanted: re.Match[str]) -> None:
        first, last = wanted.groups()
        size = len(data)
        if not first:  # bytes=-N: the last N bytes
            start, end = max(0, size - int(last or 0)), size - 1
        else:
            start, end = int(first), min(size - 1, int(last) if last else size - 1)
        if start > end:
            self._send(416, b"", {"Content-Range": f"bytes */{size}"})
            return
        headers = {"Content-Range": f"bytes {start}-{end}/{size}"}
        self._send(206, data[start : end + 1], headers, name=name)

    def _send_slowly(self, name: str, data: bytes) -> None:
        # Announce the whole file, then send it slowly: a download that stays in progress.
        self._send_head(200, len(data), {})
        chunks = 60
        step = max(1, len(data) // chunks)
        try:
            for start in range(0, len(data), step):
                self._write(name, data[start : start + step])
                self.wfile.flush()
                time.sleep(SLOW_SECONDS / chunks)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away (a cancelled run)

    def _send(self, status: int, body: bytes, headers: dict[str, str], name: str = "") -> None:
        self._send_head(status, len(body), headers)
        try:
            self._write(name, body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client read the headers and went away

    def _send_head(self, status: int, length: int, headers: dict[str, str]) -> None:
        self.send_response(status)
        if self.server.ranges:
            self.send_header("Accept-Ranges", "bytes")
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(length))
        self.end_headers()

    def _write(self, name: str, body: bytes) -> None:
        with self.server.lock:  # before the write: the client may act on it before it returns
            self.server.sent[name] += len(body)
        self.wfile.write(body)


class _Server(http.server.ThreadingHTTPServer):
    root: Path
    quirks: dict[str, Quirks]
    ranges: bool
    sent: Counter[str]
    requests: list[tuple[str, str | None]]
    lock: threading.Lock

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a connection reset on purpose, or a client that went away


class TlcServer:
    """Serves files from a directory on 127.0.0.1, like the TLC's public bucket."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.httpd = _Server(("127.0.0.1", 0), _Handler)
        self.httpd.root, self.httpd.quirks, self.httpd.ranges = root, {}, True
        self.httpd.sent, self.httpd.requests, self.httpd.lock = Counter(), [], threading.Lock()
        self.httpd.daemon_threads = True
        # A short poll: close() waits for the serve loop's next poll, and some 30 tests each
        # stop a server (0.5 s each at the default interval).
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    @property
    def url_template(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}/{{dataset}}_tripdata_{{month}}.parquet"

    @property
    def ranges(self) -> bool:
        """Whether byte ranges are served (CloudFront does); off: every GET sends the file."""
        return self.httpd.ranges

    @ranges.setter
    def ranges(self, on: bool) -> None:
        self.httpd.ranges = on

    def publish(self, dataset: Dataset, month: str, rows: int = 5_000) -> Path:
        return write_month(self.root, dataset, month, rows)

    def publish_slow(self, dataset: Dataset, month: str, rows: int = 5_000) -> Path:
        """Publish a month whose download takes about a minute."""
        path = self.publish(dataset, month, rows)
        self.quirks(path).slow = True
        return path

    def quirks(self, path: Path) -> Quirks:
        """How the server answers for the file at `path` (set its fields to misbehave)."""
        return self.httpd.quirks.setdefault(path.name, Quirks())

    def bytes_sent(self, path: Path) -> int:
        """Body bytes handed to the socket so far for the file at `path` (compressed, when
        compressed; all of it for a GET whose client reads only the headers)."""
        return self.httpd.sent[path.name]

    def requests(self, path: Path) -> list[str | None]:
        """The Range header of each request for the file at `path` (None: the whole file)."""
        return [wanted for name, wanted in self.httpd.requests if name == path.name]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
