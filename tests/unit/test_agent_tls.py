"""agent.tls: Prefect's clients in an agent's processes share one verified TLS context per
CA file (and per version of it); unverified contexts, which Prefect changes after making
them, are still made one per client. On real parts: the engines and workers of every
integration test run with it (agent.forkserver, agent.worker, agent.engine install it)."""

import importlib
import os
import ssl
from collections.abc import Iterator
from pathlib import Path

import certifi
import pytest

from agent import tls


@pytest.fixture(autouse=True)
def prefect_modules(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """install() changes Prefect's modules for the process: for a test only."""
    for name in tls.PREFECT_MODULES:
        # As Prefect has it, whatever an earlier test in this process installed.
        monkeypatch.setattr(importlib.import_module(name), "ssl", ssl)
    monkeypatch.setattr(tls, "_contexts", {})
    yield


def _ssl_context(client: object) -> ssl.SSLContext:
    return client._client._transport._pool._ssl_context  # type: ignore[attr-defined]


def test_one_context_per_ca_file_and_a_new_one_when_the_file_changes(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(Path(certifi.where()).read_bytes())
    first = tls.verified_context(str(bundle))
    assert tls.verified_context(str(bundle)) is first
    assert first.verify_mode == ssl.CERT_REQUIRED and first.check_hostname
    assert tls.verified_context(certifi.where()) is not first  # another file

    bundle.write_bytes(bundle.read_bytes() + b"\n")  # the bundle replaced: loaded again
    os.utime(bundle, ns=(1, 1))
    assert tls.verified_context(str(bundle)) is not first


def test_a_missing_ca_file_fails_as_ssl_does(tmp_path: Path) -> None:
    missing = str(tmp_path / "none.pem")
    with pytest.raises(FileNotFoundError):
        ssl.create_default_context(cafile=missing)
    with pytest.raises(FileNotFoundError):
        tls.create_default_context(cafile=missing)


def test_only_a_verified_server_context_of_a_ca_file_is_shared() -> None:
    bundle = certifi.where()
    assert tls.create_default_context(cafile=bundle) is tls.create_default_context(cafile=bundle)
    assert tls.create_default_context() is not tls.create_default_context()
    client_auth = ssl.Purpose.CLIENT_AUTH
    assert tls.create_default_context(client_auth, cafile=bundle) is not (
        tls.create_default_context(client_auth, cafile=bundle)
    )


def test_prefect_s_clients_share_the_context_once_installed() -> None:
    from prefect.client.orchestration import PrefectClient, SyncPrefectClient

    url = "http://127.0.0.1:9/api"
    assert _ssl_context(PrefectClient(url)) is not _ssl_context(PrefectClient(url))
    tls.install()
    tls.install()  # twice: the same
    tls.warm()
    shared = tls.verified_context(tls.prefect_ca_file())
    assert len(tls._contexts) == 1  # warm() loaded the one the clients load
    assert _ssl_context(PrefectClient(url)) is shared
    assert _ssl_context(SyncPrefectClient(url)) is shared
    # Only Prefect's modules see it.
    assert ssl.create_default_context is not tls.create_default_context
    assert tls.SSL_WITH_SHARED_CONTEXTS.CERT_NONE is ssl.CERT_NONE


def test_an_insecure_client_still_gets_a_context_of_its_own() -> None:
    from prefect.client.orchestration import PrefectClient
    from prefect.settings import PREFECT_API_TLS_INSECURE_SKIP_VERIFY, temporary_settings

    tls.install()
    url = "https://127.0.0.1:9/api"
    with temporary_settings({PREFECT_API_TLS_INSECURE_SKIP_VERIFY: True}):
        one, two = _ssl_context(PrefectClient(url)), _ssl_context(PrefectClient(url))
    assert one is not two and one.verify_mode == ssl.CERT_NONE
    assert _ssl_context(PrefectClient(url)).verify_mode == ssl.CERT_REQUIRED
