"""Getting one month into the data store: from the TLC (download) or the synthetic generator."""

import functools
import shutil
import tempfile
from typing import IO, TYPE_CHECKING, Literal

import httpx
import pyarrow.parquet as pq

from trainer.datasets import Dataset, validate_schema
from trainer.downloads import CHUNK_BYTES, Logger, download, remote_schema, with_retries
from trainer.months import utc_now
from trainer.settings import TrainerSettings
from trainer.store import DataStore, MonthManifest
from trainer.synthetic import generate_month

SOURCES = ("tlc", "synthetic")
# The flows' `source` parameter: one of SOURCES, as a Literal so that its schema lists them
# (a type checker, which cannot read a Literal made at run time, sees a string).
if TYPE_CHECKING:
    SourceName = str
else:
    SourceName = Literal[SOURCES]


def month_url(template: str, dataset: Dataset, month: str) -> str:
    return template.format(dataset=dataset.name, month=month)


def fetch_month(
    url: str, handle: IO[bytes], dataset: Dataset, settings: TrainerSettings, logger: Logger
) -> None:
    """Check the file's schema from its footer, then download it into `handle` (which must
    seek: a retry starts over), each step retried as trainer.downloads says."""
    retried = functools.partial(
        with_retries,
        retries=settings.download_retries,
        seconds=settings.download_retry_seconds,
        first_wait=settings.download_retry_wait_seconds,
        logger=logger,
    )
    timeout = settings.download_timeout_seconds
    with httpx.Client(timeout=timeout, follow_redirects=True) as client:
        footer = retried(lambda: remote_schema(client, url))
        if footer is None:
            logger.info("%s serves no byte ranges: its schema is checked once downloaded", url)
        else:
            schema, fetched = footer
            validate_schema(schema, dataset, where=url)
            logger.info("schema of %s checked from its footer (%d bytes)", url, fetched)
        retried(lambda: download(client, url, handle, logger=logger))


def load_month(
    store: DataStore,
    dataset: Dataset,
    month: str,
    source: str,
    settings: TrainerSettings,
    logger: Logger,
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
            if handle.seekable():
                fetch_month(origin, handle, dataset, settings, logger)
                return
            # A remote store's file only appends: download to a local file, then copy it.
            with tempfile.TemporaryFile() as spool:
                fetch_month(origin, spool, dataset, settings, logger)
                spool.seek(0)
                shutil.copyfileobj(spool, handle, CHUNK_BYTES)

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
