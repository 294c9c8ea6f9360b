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

import pytest

from testkit.compose_config import FILES, env_file, resolve

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


def _image_healthchecks() -> Iterator[tuple[str, str]]:
    for dockerfile in sorted(REPO.glob("services/*/Dockerfile")):
        text = dockerfile.read_text().replace("\\\n", " ")
        for command in re.findall(r"^HEALTHCHECK .*$", text, re.MULTILINE):
            yield str(dockerfile.relative_to(REPO)), command


def _no_urllib(checks: dict[str, str]) -> dict[str, str]:
    return {where: check for where, check in checks.items() if "urllib" in check}


# Docker runs each check every 2 to 5 s in every container: Python's urllib alone costs 60 ms
# of CPU a check, which a Compose stack paid over 2 times a second.
def test_no_image_healthcheck_imports_urllib() -> None:
    checks = dict(_image_healthchecks())
    assert len(checks) >= 6, checks
    assert _no_urllib(checks) == {}


@pytest.mark.parametrize("files", FILES, ids=lambda f: "+".join(f))
def test_no_compose_healthcheck_imports_urllib(files: tuple[str, ...], tmp_path: Path) -> None:
    services = resolve(files, env_file(tmp_path))["services"]
    checks = {
        name: " ".join(service["healthcheck"]["test"])
        for name, service in services.items()
        if service.get("healthcheck", {}).get("test")
    }
    assert {"postgres", "autoscaler"} <= set(checks), checks
    assert _no_urllib(checks) == {}
