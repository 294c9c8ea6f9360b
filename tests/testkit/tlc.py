"""Generated months on disk, and a local HTTP server standing in for the TLC's bucket."""

import http.server
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq

from trainer.datasets import Dataset
from trainer.synthetic import generate_month


def write_month(directory: Path, dataset: Dataset, month: str, rows: int, seed: int = 7) -> Path:
    path = directory / f"{dataset.name}_tripdata_{month}.parquet"
    pq.write_table(generate_month(dataset, month, rows, seed), path)
    return path


SLOW_SECONDS = 60.0  # a "slow" file trickles out over this long, at most


class _Handler(http.server.SimpleHTTPRequestHandler):
    server: "_Server"

    def log_message(self, *_: object) -> None:
        pass

    def do_GET(self) -> None:
        name = self.path.lstrip("/")
        if name not in self.server.slow:
            super().do_GET()
            return
        # Announce the whole file, then send it slowly: a download that stays in progress.
        data = (self.server.root / name).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        chunks = 60
        step = max(1, len(data) // chunks)
        try:
            for start in range(0, len(data), step):
                self.wfile.write(data[start : start + step])
                self.wfile.flush()
                time.sleep(SLOW_SECONDS / chunks)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away (a cancelled run)


class _Server(http.server.ThreadingHTTPServer):
    root: Path
    slow: set[str]


class TlcServer:
    """Serves files from a directory on 127.0.0.1, like the TLC's public bucket."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.httpd = _Server(("127.0.0.1", 0), lambda *args: _Handler(*args, directory=str(root)))
        self.httpd.root, self.httpd.slow = root, set()
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url_template(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}/{{dataset}}_tripdata_{{month}}.parquet"

    def publish(self, dataset: Dataset, month: str, rows: int = 5_000) -> Path:
        return write_month(self.root, dataset, month, rows)

    def publish_slow(self, dataset: Dataset, month: str, rows: int = 5_000) -> Path:
        """Publish a month whose download takes about a minute."""
        path = self.publish(dataset, month, rows)
        self.httpd.slow.add(path.name)
        return path

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
