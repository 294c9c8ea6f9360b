"""services/build/http-ok, the images' healthcheck: GET on the container's loopback, 200 or
not; and every healthcheck of the images and Compose files is as cheap (no urllib)."""

import http.server
import re
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
HTTP_OK = REPO / "services" / "build" / "http-ok"


class _Answer(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response({"/ok": 200, "/busy": 503}.get(self.path, 404))
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def _server() -> Iterator[int]:
    with http.server.HTTPServer(("127.0.0.1", 0), _Answer) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            yield server.server_address[1]
        finally:
            server.shutdown()


def _http_ok(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(HTTP_OK), *args], capture_output=True, text=True, timeout=10)


def test_200_is_healthy_and_anything_else_is_not() -> None:
    with _server() as port:
        assert _http_ok(str(port), "/ok").returncode == 0
        busy = _http_ok(str(port), "/busy")
        assert busy.returncode == 1 and "503" in busy.stderr, busy.stderr
        assert _http_ok(str(port), "/nope").returncode == 1
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        refused = _http_ok(str(closed.getsockname()[1]), "/ok")
    assert refused.returncode == 1 and refused.stderr
    assert _http_ok().returncode == 2  # usage


def _healthchecks() -> Iterator[tuple[str, str]]:
    for dockerfile in sorted(REPO.glob("services/*/Dockerfile")):
        text = dockerfile.read_text().replace("\\\n", " ")
        for command in re.findall(r"^HEALTHCHECK .*$", text, re.MULTILINE):
            yield str(dockerfile.relative_to(REPO)), command
    for compose in sorted(REPO.glob("docker-compose*.yaml")):
        for name, service in yaml.safe_load(compose.read_text())["services"].items():
            if "test" in service.get("healthcheck", {}):
                yield f"{compose.name} {name}", str(service["healthcheck"]["test"])


def test_no_healthcheck_imports_urllib() -> None:
    # Docker runs each check every 2 to 5 s in every container: Python's urllib alone costs
    # 60 ms of CPU a check, which a Compose stack paid over 2 times a second.
    checks = dict(_healthchecks())
    assert len(checks) >= 8, checks
    assert not {where: c for where, c in checks.items() if "urllib" in c}
