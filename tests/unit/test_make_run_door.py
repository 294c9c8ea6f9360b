"""Where `make run` finds the API (devstack.run): API_PUBLIC_URL when set; else the Compose
stack's front door when it answers; else make dev's API on loopback. The door's certificate
is trusted when `make env` made one."""

import ssl
from pathlib import Path

import pytest

from devstack import run
from devstack.tls import write_self_signed


def test_api_public_url_alone_when_set() -> None:
    env = {"API_PUBLIC_URL": "https://api.example/base/", "GATEWAY_PUBLIC_URL": "https://x"}
    assert run.api_urls(env) == ["https://api.example/base"]
    assert run.api_url(env, answers=lambda url: False) == "https://api.example/base"


def test_the_door_first_then_make_dev_s_api() -> None:
    assert run.api_urls({}) == ["https://127.0.0.1:8443/api", "http://127.0.0.1:8000"]
    env = {"GATEWAY_PUBLIC_URL": "https://box.example:9443/", "API_PORT": "8100"}
    assert run.api_urls(env) == ["https://box.example:9443/api", "http://127.0.0.1:8100"]
    asked: list[str] = []

    def door_up(url: str) -> bool:
        asked.append(url)
        return url.startswith("https://")

    assert run.api_url(env, door_up) == "https://box.example:9443/api"
    # The door does not answer (make dev runs): the local API, without asking it first.
    asked.clear()
    assert run.api_url(env, lambda url: asked.append(url) or False) == "http://127.0.0.1:8100"
    assert asked == ["https://box.example:9443/api"]


def test_the_door_s_certificate_is_trusted_when_there_is_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    before = ssl.create_default_context().cert_store_stats()["x509"]
    assert run.tls_context({}).cert_store_stats()["x509"] == before  # no certs/ here
    write_self_signed(tmp_path / "certs" / "gateway.crt", tmp_path / "certs" / "gateway.key")
    assert run.tls_context({}).cert_store_stats()["x509"] == before + 1
    mine = tmp_path / "mine.crt"
    write_self_signed(mine, tmp_path / "mine.key", ["door.example"])
    context = run.tls_context({"TLS_CERT_FILE": str(mine)})
    assert context.cert_store_stats()["x509"] == before + 1
    assert context.verify_mode == ssl.CERT_REQUIRED
