"""Getting one month into the data store: from the TLC (download) or the synthetic generator."""

import logging
from typing import IO

import httpx
import pyarrow.parquet as pq

from trainer.datasets import Dataset
from trainer.months import utc_now
from trainer.settings import TrainerSettings
from trainer.store import DataStore, MonthManifest
from trainer.synthetic import generate_month

SOURCES = ("tlc", "synthetic")
CHUNK_BYTES = 1 << 20


class DownloadError(RuntimeError):
    """The month could not be fetched from its URL."""


def month_url(template: str, dataset: Dataset, month: str) -> str:
    return template.format(dataset=dataset.name, month=month)


def download(
    url: str, handle: IO[bytes], *, timeout: float, logger: logging.Logger | logging.LoggerAdapter
) -> None:
    """Stream `url` into `handle`, logging progress every tenth (or every 16 MiB)."""
    try:
        with httpx.stream("GET", url, timeout=timeout, follow_redirects=True) as response:
            if response.status_code == httpx.codes.NOT_FOUND:
                raise DownloadError(f"{url} does not exist (HTTP 404): the month is not published")
            if response.is_error:
                raise DownloadError(f"{url} answered HTTP {response.status_code}")
            total = int(response.headers.get("content-length", 0)) or None
            received, next_report = 0, 0.0
            for chunk in response.iter_bytes(CHUNK_BYTES):
                handle.write(chunk)
                received += len(chunk)
                done = received / total if total else received / (16 * CHUNK_BYTES)
                if done >= next_report:
                    logger.info("downloaded %s", _progress(received, total))
                    next_report = (int(done * 10) + 1) / 10 if total else int(done) + 1
    except httpx.HTTPError as error:
        raise DownloadError(f"could not download {url}: {error}") from error
    if total is not None and received != total:
        raise DownloadError(f"{url} was cut short: {received} of {total} bytes arrived")
    logger.info("downloaded %s in full", _progress(received, total))


def _progress(received: int, total: int | None) -> str:
    mib = received / (1 << 20)
    return f"{mib:.1f} MiB ({received / total:.0%})" if total else f"{mib:.1f} MiB"


def load_month(
    store: DataStore,
    dataset: Dataset,
    month: str,
    source: str,
    settings: TrainerSettings,
    logger: logging.Logger | logging.LoggerAdapter,
    *,
    force: bool = False,
    drift: float = 0.0,
) -> MonthManifest:
    """Store one month once; with `force`, fetch it again over the stored copy. `drift`
    (synthetic months only) makes its trips slower by zone (see trainer.synthetic)."""
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}: use one of {', '.join(SOURCES)}")
    if drift and source != "synthetic":
        raise ValueError(f"drift={drift} applies to synthetic months only, not source={source!r}")
    if store.has_month(dataset, month) and not force:
        manifest = store.read_manifest(dataset, month)
        logger.info(
            "%s %s is already stored (source: %s); pass force=true to fetch it again",
            dataset.name,
            month,
            manifest.source,
        )
        return manifest

    if source == "tlc":
        origin = month_url(settings.tlc_url_template, dataset, month)
        logger.info("downloading %s %s from %s", dataset.name, month, origin)

        def fill(handle: IO[bytes]) -> None:
            download(origin, handle, timeout=settings.download_timeout_seconds, logger=logger)

    else:
        rows, seed = settings.synthetic_rows, settings.synthetic_seed
        origin = f"synthetic generator (rows={rows}, seed={seed}, drift={drift})"
        logger.info(
            "generating %s %s: %d synthetic rows (drift %s)", dataset.name, month, rows, drift
        )

        def fill(handle: IO[bytes]) -> None:
            pq.write_table(generate_month(dataset, month, rows, seed, drift), handle)

    def describe(rows: int, size: int) -> MonthManifest:
        return MonthManifest(
            dataset=dataset.name,
            month=month,
            source=source,
            origin=origin,
            rows=rows,
            bytes=size,
            loaded_at=utc_now(),
        )

    manifest = store.write_month(dataset, month, fill, describe)
    logger.info(
        "stored %s %s: %d rows, %.1f MiB, source %s, at %s",
        dataset.name,
        month,
        manifest.rows,
        manifest.bytes / (1 << 20),
        source,
        store.display(store.month_path(dataset, month)),
    )
    return manifest
