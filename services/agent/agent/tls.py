"""One TLS context per CA file for Prefect's clients, in the agent's worker and engines.

Prefect builds a new `ssl.create_default_context(cafile=...)` for every client it opens
(`PrefectClient`, `SyncPrefectClient`, the server version check, websockets), plain http
included: each loads the whole CA bundle, about 25 ms of CPU. A run's engine opens about
seven clients and its worker three, so in a burst of short runs on two cores this was a
third of the engines' and workers' CPU (py-spy, `make bench-autoscale`'s burst). A context is
made to be shared by many connections; `install()` makes those Prefect modules reuse one
per CA file (and per version of that file: a replaced bundle is loaded again).

Only the verified kind is shared, asked for with a CA file and nothing else. Prefect changes
the unverified one it builds (PREFECT_API_TLS_INSECURE_SKIP_VERIFY) after creating it, so
that one is still created each time. Nothing outside the modules in PREFECT_MODULES sees
this. The fork server calls `install()` and warms the context before it forks, so its
engines load no bundle at all.
"""

from __future__ import annotations

import importlib
import os
import ssl
import types
from typing import Any

# Prefect's modules that build a context per client, each with `import ssl`.
PREFECT_MODULES = (
    "prefect.client.orchestration",
    "prefect._internal.version_checking",
    "prefect._internal.websockets",
)

_contexts: dict[tuple[str, int, int], ssl.SSLContext] = {}


def verified_context(cafile: str) -> ssl.SSLContext:
    """`ssl.create_default_context(cafile=cafile)`, made once per version of the file.

    Raises what `ssl.create_default_context` raises for a missing or unreadable file.
    """
    try:
        stat = os.stat(cafile)
    except OSError:
        return ssl.create_default_context(cafile=cafile)  # its own error, as Prefect's call
    key = (cafile, stat.st_mtime_ns, stat.st_size)
    context = _contexts.get(key)
    if context is None:
        context = _contexts[key] = ssl.create_default_context(cafile=cafile)
    return context


def create_default_context(
    purpose: ssl.Purpose = ssl.Purpose.SERVER_AUTH,
    *,
    cafile: str | None = None,
    capath: str | None = None,
    cadata: Any = None,
) -> ssl.SSLContext:
    """`ssl.create_default_context`, sharing the verified contexts of a CA file."""
    if cafile and purpose == ssl.Purpose.SERVER_AUTH and capath is None and cadata is None:
        return verified_context(cafile)
    return ssl.create_default_context(purpose, cafile=cafile, capath=capath, cadata=cadata)


class _SharedContextsSsl(types.ModuleType):
    """The `ssl` module as Prefect's client modules see it once `install()` ran."""

    create_default_context = staticmethod(create_default_context)

    def __getattr__(self, name: str) -> Any:
        return getattr(ssl, name)


SSL_WITH_SHARED_CONTEXTS = _SharedContextsSsl("ssl")


def install() -> None:
    """Make Prefect's client modules share verified contexts; safe to call again."""
    for name in PREFECT_MODULES:
        module = importlib.import_module(name)
        if getattr(module, "ssl", None) is ssl:
            module.ssl = SSL_WITH_SHARED_CONTEXTS  # type: ignore[attr-defined]


def prefect_ca_file() -> str:
    """The CA bundle Prefect's clients load: PREFECT_API_SSL_CERT_FILE, else certifi's."""
    import certifi
    from prefect.settings import PREFECT_API_SSL_CERT_FILE

    return PREFECT_API_SSL_CERT_FILE.value() or certifi.where()


def warm() -> None:
    """Load the CA bundle Prefect's clients use into the cache."""
    verified_context(prefect_ca_file())
