"""Generated months on disk, and a local HTTP server standing in for the TLC's bucket."""

import http.server
import threading
from pathlib import Path

import pyarrow.parquet as pq

from trainer.datasets import Dataset
from trainer.synthetic import generate_month


def write_month(directory: Path, dataset: Dataset, month: str, rows: int, seed: int = 7) -> Path:
    path = directory / f"{dataset.name}_tripdata_{month}.parquet"
    pq.write_table(generate_month(dataset, month, rows, seed), path)
    return path


class TlcServer:
    """Serves files from a directory on 127.0.0.1, like the TLC's public bucket."""

    def __init__(self, root: Path) -> None:
        self.root = root
        handler = lambda *args: http.server.SimpleHTTPRequestHandler(  # noqa: E731
            *args, directory=str(root)
        )
        http.server.SimpleHTTPRequestHandler.log_message = lambda *_: None
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url_template(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}/{{dataset}}_tripdata_{{month}}.parquet"

    def publish(self, dataset: Dataset, month: str, rows: int = 5_000) -> Path:
        return write_month(self.root, dataset, month, rows)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
