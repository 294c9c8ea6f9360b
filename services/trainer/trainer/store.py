"""The data store: one parquet file per dataset and month, in a directory or any fsspec URL.

Every write goes to a temporary name first and is renamed into place, so a reader sees a
whole file or none. Beside each month a small JSON manifest says where it came from.
"""

import dataclasses
import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Any

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.core import url_to_fs

from trainer.datasets import Dataset, SchemaError, validate_schema

# Rows per batch when a month is read in batches: about 30 MiB of the columns training reads.
BATCH_ROWS = 1 << 20


class MonthNotLoadedError(FileNotFoundError):
    """The month a run needs is not in the data store."""


class CorruptMonthError(ValueError):
    """A stored or downloaded month that is not a readable parquet file."""


@dataclasses.dataclass(frozen=True)
class MonthManifest:
    dataset: str
    month: str
    source: str  # "tlc" or "synthetic"
    origin: str  # the URL or generator settings it came from
    rows: int
    bytes: int
    loaded_at: str


class Store:
    """Files under one root, written atomically."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.fs: fsspec.AbstractFileSystem
        self.fs, self.root = url_to_fs(url)

    def path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    def display(self, path: str) -> str:
        """A path as the user would write it (with its protocol, if any)."""
        return self.fs.unstrip_protocol(path) if "://" in self.url else path

    def exists(self, path: str) -> bool:
        return bool(self.fs.exists(path))

    @contextmanager
    def staged(self, path: str) -> Iterator[str]:
        """A temporary sibling of `path` to fill; renamed over `path` on success, else removed."""
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        temporary = f"{path}.tmp-{uuid.uuid4().hex}"
        try:
            yield temporary
            self.fs.mv(temporary, path)
        finally:
            if self.fs.exists(temporary):
                self.fs.rm(temporary)

    def write_bytes(self, path: str, data: bytes) -> None:
        with self.staged(path) as temporary:
            self.fs.pipe_file(temporary, data)


class DataStore(Store):
    """Trip months, as `<dataset>/<dataset>_tripdata_<YYYY-MM>.parquet` plus a manifest."""

    def month_path(self, dataset: Dataset, month: str) -> str:
        return self.path(dataset.name, f"{dataset.name}_tripdata_{month}.parquet")

    def manifest_path(self, dataset: Dataset, month: str) -> str:
        return self.month_path(dataset, month).removesuffix(".parquet") + ".json"

    def has_month(self, dataset: Dataset, month: str) -> bool:
        return self.exists(self.month_path(dataset, month))

    def write_month(
        self,
        dataset: Dataset,
        month: str,
        fill: Callable[[IO[bytes]], None],
        describe: Callable[[int, int], MonthManifest],
    ) -> MonthManifest:
        """Store a month that `fill` writes, validated before it becomes visible.

        `describe(rows, size)` makes the manifest of the validated file. It is written before
        the month is renamed into place, so a visible month always has one.
        """
        final = self.month_path(dataset, month)
        with self.staged(final) as temporary:
            with self.fs.open(temporary, "wb") as handle:
                fill(handle)
            rows = check_month_file(self, temporary, dataset, shown_as=self.display(final))
            manifest = describe(rows, int(self.fs.size(temporary)))
            self.write_bytes(self.manifest_path(dataset, month), _to_json(manifest))
        return manifest

    def read_manifest(self, dataset: Dataset, month: str) -> MonthManifest:
        """The stored month's manifest; a file put there by hand has source "unknown"."""
        path = self.manifest_path(dataset, month)
        if self.exists(path):
            return MonthManifest(**json.loads(self.fs.cat_file(path)))
        month_path = self.month_path(dataset, month)
        shown = self.display(month_path)
        return MonthManifest(
            dataset=dataset.name,
            month=month,
            source="unknown",
            origin=shown,
            rows=check_month_file(self, month_path, dataset, shown_as=shown),
            bytes=int(self.fs.size(month_path)),
            loaded_at="unknown",
        )

    def read_month(self, dataset: Dataset, month: str) -> pd.DataFrame:
        """The columns training needs, or a clear error when the month is absent or broken."""
        path = self._stored_month(dataset, month)
        try:
            with self.fs.open(path, "rb") as handle:
                table = pq.read_table(handle, columns=dataset.columns)
        except (pa.ArrowException, OSError) as error:
            raise self._corrupt(path, dataset, month, error) from error
        validate_schema(table.schema, dataset, where=self.display(path))
        return table.to_pandas()

    def month_rows(self, dataset: Dataset, month: str) -> int:
        """The month's row count, from its parquet footer: no data is read."""
        path = self._stored_month(dataset, month)
        try:
            with self.fs.open(path, "rb") as handle:
                return int(pq.ParquetFile(handle).metadata.num_rows)
        except (pa.ArrowException, OSError) as error:
            raise self._corrupt(path, dataset, month, error) from error

    def month_batches(self, dataset: Dataset, month: str) -> Iterator[pa.RecordBatch]:
        """The columns training needs, BATCH_ROWS rows at a time at most: a month too big to
        hold whole is read at the memory of one batch (plus what the caller keeps of it)."""
        path = self._stored_month(dataset, month)
        try:
            with self.fs.open(path, "rb") as handle:
                # Pre-buffering, threads and a reader over all row groups each held on to
                # more: together 0.3 GiB of a 20 M-row month (measured, pyarrow 26).
                parquet = pq.ParquetFile(handle, pre_buffer=False)
                validate_schema(parquet.schema_arrow, dataset, where=self.display(path))
                for group in range(parquet.num_row_groups):
                    yield from parquet.iter_batches(
                        batch_size=BATCH_ROWS,
                        row_groups=[group],
                        columns=dataset.columns,
                        use_threads=False,
                    )
        except (pa.ArrowException, OSError) as error:
            raise self._corrupt(path, dataset, month, error) from error

    def _stored_month(self, dataset: Dataset, month: str) -> str:
        path = self.month_path(dataset, month)
        if not self.exists(path):
            raise MonthNotLoadedError(
                f"{dataset.name} data for {month} is not in the data store: "
                f"{self.display(path)} does not exist. Load it first with the load-data flow "
                f"(parameters month={month!r}, dataset={dataset.name!r}), "
                "or run train-model with auto_load=true."
            )
        return path

    def _corrupt(self, path: str, dataset: Dataset, month: str, error: Exception) -> Exception:
        return CorruptMonthError(
            f"{self.display(path)} is not a readable parquet file ({error}). "
            f"Reload it with load-data (month={month!r}, dataset={dataset.name!r}, "
            "force=true)."
        )


def check_month_file(store: Store, path: str, dataset: Dataset, *, shown_as: str) -> int:
    """Read the file end to end (the columns training needs) and return its row count."""
    try:
        with store.fs.open(path, "rb") as handle:
            parquet = pq.ParquetFile(handle)
            validate_schema(parquet.schema_arrow, dataset, where=shown_as)
            rows = 0
            for batch in parquet.iter_batches(columns=dataset.columns):
                rows += batch.num_rows
    except SchemaError:
        raise
    except (pa.ArrowException, OSError) as error:
        raise CorruptMonthError(f"{shown_as} is not a readable parquet file: {error}") from error
    return rows


def _to_json(value: Any) -> bytes:
    return json.dumps(dataclasses.asdict(value), indent=2).encode()
