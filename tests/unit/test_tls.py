"""`make env`'s certificate for the front door (devstack.tls): what it makes, that it never
overwrites, that the operator's files win, and the group the gateway container reads the
key through."""

import datetime
import ipaddress
import os
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from devstack import tls


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A checkout's root: the current directory, with no TLS setting in the environment."""
    monkeypatch.chdir(tmp_path)
    for name in ("TLS_CERT_FILE", "TLS_KEY_FILE", "TLS_KEY_GID"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / ".env").write_text("API_KEY=x\n")
    return tmp_path


def test_self_signed_is_p256_for_the_names_and_loopback_for_a_year() -> None:
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    cert_pem, key_pem = tls.self_signed(["localhost", "box"], now=now)
    cert = x509.load_pem_x509_certificate(cert_pem)
    key = load_pem_private_key(key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert cert.public_key() == key.public_key()
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost", "box"]
    assert names.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert cert.not_valid_after_utc - now == datetime.timedelta(days=365)
    assert cert.not_valid_before_utc <= now
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    with pytest.raises(ValueError, match="at least one DNS name"):
        tls.self_signed([])


def test_a_tls_client_trusting_the_certificate_accepts_it_for_localhost(workdir: Path) -> None:
    cert, key = workdir / "c.pem", workdir / "k.pem"
    tls.write_self_signed(cert, key, ["localhost"])
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)  # the pair matches
    client = ssl.create_default_context(cafile=str(cert))
    assert client.verify_mode == ssl.CERT_REQUIRED and client.check_hostname


def test_make_env_creates_the_pair_once_with_modes_and_the_key_group(workdir: Path) -> None:
    lines = tls.ensure(workdir / ".env")
    cert, key = workdir / "certs" / "gateway.crt", workdir / "certs" / "gateway.key"
    assert "created a self-signed certificate" in lines[0]
    assert stat.S_IMODE(key.stat().st_mode) == 0o640
    assert stat.S_IMODE(cert.stat().st_mode) == 0o644
    assert stat.S_IMODE((workdir / "certs").stat().st_mode) == 0o700
    env = (workdir / ".env").read_text()
    assert env == f"API_KEY=x\nTLS_KEY_GID={key.stat().st_gid}\n"
    before = cert.read_bytes(), key.read_bytes()
    # Again: nothing is overwritten, .env is left as it is.
    assert tls.ensure(workdir / ".env") == [
        "TLS: certs/gateway.crt and certs/gateway.key exist; kept"
    ]
    assert (cert.read_bytes(), key.read_bytes()) == before
    assert (workdir / ".env").read_text() == env


def test_half_a_pair_is_an_error_not_an_overwrite(workdir: Path) -> None:
    (workdir / "certs").mkdir()
    (workdir / "certs" / "gateway.key").write_text("mine")
    with pytest.raises(
        tls.TlsError, match=r"only one of certs/gateway\.crt and certs/gateway\.key"
    ):
        tls.ensure(workdir / ".env")
    assert (workdir / "certs" / "gateway.key").read_text() == "mine"
    assert not (workdir / "certs" / "gateway.crt").exists()
    with pytest.raises(tls.TlsError, match="exists: not overwritten"):
        tls.write_self_signed(workdir / "certs" / "gateway.crt", workdir / "certs" / "gateway.key")


def test_the_operators_files_win_and_are_checked(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mine = workdir / "mine"
    mine.mkdir()
    tls.write_self_signed(mine / "door.crt", mine / "door.key", ["door.example"])
    (workdir / ".env").write_text(
        f"TLS_CERT_FILE={mine / 'door.crt'}\nTLS_KEY_FILE={mine / 'door.key'}\nTLS_KEY_GID=5\n"
    )
    assert tls.ensure(workdir / ".env") == [
        f"TLS: using {mine / 'door.crt'} and {mine / 'door.key'} (TLS_CERT_FILE/TLS_KEY_FILE)"
    ]
    assert not (workdir / "certs").exists()
    # From the environment too; a missing file is named.
    monkeypatch.setenv("TLS_CERT_FILE", str(workdir / "absent.crt"))
    with pytest.raises(tls.TlsError, match=r"no such file: .*absent\.crt"):
        tls.ensure(workdir / ".env")
    monkeypatch.delenv("TLS_CERT_FILE")
    (workdir / ".env").write_text(f"TLS_KEY_FILE={mine / 'door.key'}\n")
    with pytest.raises(tls.TlsError, match="set both TLS_CERT_FILE and TLS_KEY_FILE"):
        tls.ensure(workdir / ".env")


def test_a_key_group_in_the_environment_is_not_written_to_env(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TLS_KEY_GID", "1234")
    tls.ensure(workdir / ".env")
    assert (workdir / ".env").read_text() == "API_KEY=x\n"


def test_main_reports_errors_with_exit_2(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    (workdir / ".env").write_text("TLS_CERT_FILE=/nonexistent/c.pem\nTLS_KEY_FILE=/nonexistent/k\n")
    assert tls.main(["--env-file", str(workdir / ".env")]) == 2
    assert "make env: TLS_CERT_FILE/TLS_KEY_FILE: no such file" in capsys.readouterr().err
    (workdir / ".env").write_text("")
    assert tls.main(["--env-file", str(workdir / ".env")]) == 0
    assert os.path.exists(workdir / "certs" / "gateway.key")
