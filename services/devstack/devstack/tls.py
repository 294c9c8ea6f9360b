"""The front door's certificate: `make env` runs `python -m devstack.tls`.

When TLS_CERT_FILE and TLS_KEY_FILE are not set (in the environment or `.env`), a
self-signed certificate is written to certs/gateway.crt and certs/gateway.key, once: files
that exist are never overwritten. Either way, `.env` gets TLS_KEY_GID, the group of the key,
which the gateway container joins to read it (it runs as uid 101, not as the key's owner).

The key is EC P-256, readable by its owner and group only (0640, in a 0700 directory); the
certificate is valid for 1 year for localhost, 127.0.0.1, ::1 and this machine's host name.
"""

import argparse
import datetime
import ipaddress
import os
import socket
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from devstack.settings import DevSettings

DEFAULT_CERT = Path("certs/gateway.crt")
DEFAULT_KEY = Path("certs/gateway.key")
VALID_DAYS = 365
KEY_MODE = 0o640
CERT_MODE = 0o644
GID_VARIABLE = "TLS_KEY_GID"

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class TlsError(Exception):
    """A certificate that cannot be used or made; the message says what to do."""


def default_names() -> list[str]:
    """DNS names of the certificate: localhost and this machine's name (short and fully
    qualified, when they differ)."""
    names = ["localhost"]
    for name in (socket.gethostname(), socket.getfqdn()):
        if name and name not in names and not _is_ip(name):
            names.append(name)
    return names


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def self_signed(
    names: Sequence[str],
    addresses: Iterable[IpAddress] = (
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ),
    *,
    days: int = VALID_DAYS,
    now: datetime.datetime | None = None,
) -> tuple[bytes, bytes]:
    """A new EC P-256 key and a self-signed server certificate for `names` (DNS) and
    `addresses` (IP), valid from `now` (UTC; minus 5 minutes of clock skew) for `days` days.
    Returns (certificate PEM, unencrypted PKCS#8 key PEM). `names` must not be empty."""
    if not names:
        raise ValueError("a certificate needs at least one DNS name")
    now = now or datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, names[0]),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "training-stack (self-signed)"),
        ]
    )
    alternatives: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    alternatives += [x509.IPAddress(a) for a in addresses]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create `path` with `mode` (never replacing a file: FileExistsError)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(path, mode)  # the umask may have taken bits off


def write_self_signed(cert: Path, key: Path, names: Sequence[str] | None = None) -> None:
    """Write a new self-signed pair to `cert` (0644) and `key` (0640); their directory is
    created 0700 when absent. Raises TlsError when either file exists (nothing is written)."""
    existing = [str(p) for p in (cert, key) if p.exists()]
    if existing:
        raise TlsError(f"{', '.join(existing)} exists: not overwritten")
    for directory in {cert.parent, key.parent}:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    cert_pem, key_pem = self_signed(names or default_names())
    _write_new(key, key_pem, KEY_MODE)
    _write_new(cert, cert_pem, CERT_MODE)


def _dotenv_names(env_file: Path) -> set[str]:
    if not env_file.exists():
        return set()
    return {
        line.split("=", 1)[0].strip()
        for line in env_file.read_text().splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    }


def ensure(env_file: Path) -> list[str]:
    """What `make env` does for TLS, relative to the current directory, with the settings of
    the environment and `env_file`; returns the lines it reports. Raises TlsError for files
    named in the settings that are missing, and for half a default pair (one of
    certs/gateway.crt and .key without the other)."""
    settings = DevSettings(_env_file=env_file)
    report = []
    cert, key = settings.tls_cert_file or DEFAULT_CERT, settings.tls_key_file or DEFAULT_KEY
    given = settings.tls_cert_file is not None, settings.tls_key_file is not None
    if any(given):
        if not all(given):
            raise TlsError("set both TLS_CERT_FILE and TLS_KEY_FILE, or neither")
        missing = [str(p) for p in (cert, key) if not p.is_file()]
        if missing:
            raise TlsError(f"TLS_CERT_FILE/TLS_KEY_FILE: no such file: {', '.join(missing)}")
        report.append(f"TLS: using {cert} and {key} (TLS_CERT_FILE/TLS_KEY_FILE)")
    else:
        present = [p.exists() for p in (cert, key)]
        if all(present):
            report.append(f"TLS: {cert} and {key} exist; kept")
        elif any(present):
            raise TlsError(
                f"only one of {cert} and {key} exists: delete it to have a new pair made"
            )
        else:
            write_self_signed(cert, key)
            report.append(
                f"TLS: created a self-signed certificate {cert} (key {key}) for "
                f"{', '.join(default_names())}, 127.0.0.1 and ::1, valid {VALID_DAYS} days"
            )
    if GID_VARIABLE not in os.environ and GID_VARIABLE not in _dotenv_names(env_file):
        gid = key.stat().st_gid
        with env_file.open("a") as out:
            out.write(f"{GID_VARIABLE}={gid}\n")
        report.append(f"TLS: {env_file}: {GID_VARIABLE}={gid} (the group that reads {key})")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.tls", description=__doc__)
    parser.add_argument("--env-file", type=Path, default=Path(".env"))
    args = parser.parse_args(argv)
    try:
        lines = ensure(args.env_file)
    except TlsError as error:
        print(f"make env: {error}", file=sys.stderr)
        return 2
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
