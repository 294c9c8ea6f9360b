"""Downloads from a source that misbehaves: throttled, compressing, cut off, or serving an old
schema, against the local stand-in for the TLC's bucket."""

import logging
import re
import time
from pathlib import Path
from typing import IO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from testkit.tlc import TlcServer
from trainer.datasets import DATASETS, Dataset, SchemaError
from trainer.downloads import DownloadError
from trainer.loading import load_month
from trainer.settings import TrainerSettings
from trainer.store import DataStore

MONTH = "2021-06"
logger = logging.getLogger("test.downloads")


def _load(tmp_path: Path, tlc: TlcServer, dataset: Dataset, **settings: float):  # -> manifest
    # Waits from 10 ms, with seconds to spare on a busy machine, unless a test asks otherwise.
    options = {
        "download_retries": 3,
        "download_retry_seconds": 5,
        "download_retry_wait_seconds": 0.01,
    } | settings
    store = DataStore(str(tmp_path / "store"))
    config = TrainerSettings(tlc_url_template=tlc.url_template, **options)
    return load_month(store, dataset, MONTH, "tlc", config, logger)


def _messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records]


def _stored(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "store").rglob("*") if p.is_file())


@pytest.mark.parametrize("status", [403, 408, 500, 503])
def test_a_transient_answer_is_retried_with_the_attempt_in_the_log(
    tmp_path: Path,
    tlc_server: TlcServer,
    fhv: Dataset,
    caplog: pytest.LogCaptureFixture,
    status: int,
) -> None:
    path = tlc_server.publish(fhv, MONTH)
    tlc_server.quirks(path).answers = [(status, {}), (status, {})]
    with caplog.at_level(logging.INFO, logger=logger.name):
        manifest = _load(tmp_path, tlc_server, fhv)
    assert manifest.rows == 5_000
    retries = [m for m in _messages(caplog) if "failed" in m]
    assert len(retries) == 2
    assert retries[0].startswith("attempt 1 of 4 failed: ")
    assert retries[1].startswith("attempt 2 of 4 failed: ")
    assert f"answered HTTP {status}" in retries[0]


def test_a_throttled_answer_waits_as_long_as_retry_after_says(
    tmp_path: Path, tlc_server: TlcServer, fhv: Dataset, caplog: pytest.LogCaptureFixture
) -> None:
    path = tlc_server.publish(fhv, MONTH)
    tlc_server.quirks(path).answers = [(429, {"Retry-After": "1"})]
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger=logger.name):
        manifest = _load(tmp_path, tlc_server, fhv)
    assert time.monotonic() - started >= 1.0
    assert manifest.rows == 5_000
    [retry] = [m for m in _messages(caplog) if "failed" in m]
    assert "HTTP 429, throttled, asked to wait 1 s" in retry
    assert retry.endswith("retrying in 1.0 s")


@pytest.mark.parametrize(("status", "kind"), [(403, "forbidden"), (502, "server error")])
def test_giving_up_says_which_failure_it_was_with_url_and_status(
    tmp_path: Path, tlc_server: TlcServer, fhv: Dataset, status: int, kind: str
) -> None:
    path = tlc_server.publish(fhv, MONTH)
    tlc_server.quirks(path).answers = [(status, {})] * 10
    with pytest.raises(DownloadError) as error:
        _load(tmp_path, tlc_server, fhv)
    url = tlc_server.url_template.format(dataset="fhv", month=MONTH)
    message = str(error.value)
    assert message.startswith(f"{url} answered HTTP {status}, {kind}")
    assert re.search(r"gave up after 4 attempts in [0-9.]+ s: DOWNLOAD_RETRIES=3", message)
    assert len(tlc_server.requests(path)) == 4
    assert _stored(tmp_path) == []


def test_a_retry_after_beyond_the_budget_gives_up_at_once(
    tmp_path: Path, tlc_server: TlcServer, fhv: Dataset
) -> None:
    path = tlc_server.publish(fhv, MONTH)
    tlc_server.quirks(path).answers = [(429, {"Retry-After": "3600"})]
    started = time.monotonic()
    with pytest.raises(
        DownloadError,
        match=r"HTTP 429, throttled, asked to wait 3600 s \(gave up after 1 attempt in ",
    ):
        _load(tmp_path, tlc_server, fhv)
    assert time.monotonic() - started < 5


def test_an_unpublished_month_is_not_retried(
    tmp_path: Path, tlc_server: TlcServer, fhv: Dataset
) -> None:
    with pytest.raises(DownloadError, match=r"does not exist \(HTTP 404\): the month is not pub"):
        _load(tmp_path, tlc_server, fhv)
    path = tlc_server.root / f"fhv_tripdata_{MONTH}.parquet"
    assert tlc_server.requests(path) == ["bytes=-65536"]


def test_a_connection_reset_mid_stream_starts_the_download_again(
    tmp_path: Path, tlc_server: TlcServer, fhv: Dataset, caplog: pytest.LogCaptureFixture
) -> None:
    path = tlc_server.publish(fhv, MONTH, rows=50_000)
    tlc_server.quirks(path).reset_after = path.stat().st_size // 2
    with caplog.at_level(logging.INFO, logger=logger.name):
        manifest = _load(tmp_path, tlc_server, fhv)
    assert manifest.rows == 50_000 and manifest.bytes == path.stat().st_size
    [retry] = [m for m in _messages(caplog) if "failed" in m]
    assert retry.startswith("attempt 1 of 4 failed: could not download ")
    assert tlc_server.requests(path) == ["bytes=-65536", None, None]


def test_a_mirror_that_compresses_on_the_fly(
    tmp_path: Path, tlc_server: TlcServer, fhv: Dataset, caplog: pytest.LogCaptureFixture
) -> None:
    path = tlc_server.publish(fhv, MONTH, rows=50_000)
    tlc_server.quirks(path).gzip = True
    with caplog.at_level(logging.INFO, logger=logger.name):
        manifest = _load(tmp_path, tlc_server, fhv)
    assert manifest.rows == 50_000 and manifest.bytes == path.stat().st_size
    shares = [int(s) for m in _messages(caplog) for s in re.findall(r"\((\d+)%\)", m)]
    assert shares[-1] == 100 and max(shares) == 100, shares
    assert tlc_server.bytes_sent(path) < path.stat().st_size  # it did compress


def _yellow_2009(rows: int) -> pa.Table:
    """The yellow files' columns before 2010: coordinates, no location IDs."""
    rng = np.random.default_rng(3)
    start = np.datetime64("2009-01-01T00:00", "us")
    pickup = start + rng.integers(0, 31 * 86_400, rows).astype("timedelta64[s]")
    return pa.table(
        {
            "vendor_name": pa.array(rng.choice(["VTS", "CMT", "DDS"], rows)),
            "Trip_Pickup_DateTime": pa.array(pickup.astype(str)),
            "Trip_Dropoff_DateTime": pa.array((pickup + np.timedelta64(600, "s")).astype(str)),
            "Passenger_Count": rng.integers(1, 6, rows),
            "Trip_Distance": rng.random(rows) * 10,
            "Start_Lon": -74 + rng.random(rows) / 10,
            "Start_Lat": 40.7 + rng.random(rows) / 10,
            "End_Lon": -74 + rng.random(rows) / 10,
            "End_Lat": 40.7 + rng.random(rows) / 10,
            "Total_Amt": rng.random(rows) * 50,
        }
    )


def test_an_old_schema_is_refused_from_the_footer_before_the_download(
    tmp_path: Path, tlc_server: TlcServer
) -> None:
    yellow = DATASETS["yellow"]
    path = tlc_server.root / f"yellow_tripdata_{MONTH}.parquet"
    pq.write_table(_yellow_2009(100_000), path)
    with pytest.raises(SchemaError) as error:
        _load(tmp_path, tlc_server, yellow)
    url = tlc_server.url_template.format(dataset="yellow", month=MONTH)
    assert str(error.value).startswith(f"{url} is not a usable yellow trip file: ")
    assert "'tpep_pickup_datetime' is missing" in str(error.value)
    assert tlc_server.requests(path) == ["bytes=-65536"]
    size, sent = path.stat().st_size, tlc_server.bytes_sent(path)
    assert sent <= 64 << 10 and sent < size / 50, (sent, size)
    assert _stored(tmp_path) == []


def test_a_footer_longer_than_the_first_request_takes_a_second(
    tmp_path: Path, tlc_server: TlcServer, fhv: Dataset
) -> None:
    table = pa.table({f"extra_{i:04d}": pa.array([1.0] * 10) for i in range(800)})
    path = tlc_server.root / f"fhv_tripdata_{MONTH}.parquet"
    pq.write_table(table, path)
    with pytest.raises(SchemaError, match="'pickup_datetime' is missing"):
        _load(tmp_path, tlc_server, fhv)
    data = path.read_bytes()
    footer = int.from_bytes(data[-8:-4], "little") + 8
    assert footer > 64 << 10
    first, end = len(data) - footer, len(data) - (64 << 10) - 1
    assert tlc_server.requests(path) == ["bytes=-65536", f"bytes={first}-{end}"]


def test_without_byte_ranges_the_file_is_checked_once_downloaded(
    tmp_path: Path, tlc_server: TlcServer, fhv: Dataset, caplog: pytest.LogCaptureFixture
) -> None:
    tlc_server.ranges = False
    path = tlc_server.publish(fhv, MONTH)
    with caplog.at_level(logging.INFO, logger=logger.name):
        assert _load(tmp_path, tlc_server, fhv).rows == 5_000
    assert any("serves no byte ranges" in m for m in _messages(caplog))

    old = tlc_server.root / f"yellow_tripdata_{MONTH}.parquet"
    pq.write_table(_yellow_2009(1_000), old)
    with pytest.raises(SchemaError, match="'tpep_pickup_datetime' is missing"):
        _load(tmp_path, tlc_server, DATASETS["yellow"])
    assert tlc_server.requests(old) == ["bytes=-65536", None]
    assert path.name in _stored(tmp_path) and old.name not in _stored(tmp_path)


def test_a_store_that_only_appends_gets_the_download_through_a_local_copy(
    tmp_path: Path, tlc_server: TlcServer, fhv: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Files of object stores (s3://, gs://) do not seek: a restart cannot rewind them.
    path = tlc_server.publish(fhv, MONTH, rows=50_000)
    tlc_server.quirks(path).reset_after = path.stat().st_size // 3
    store = DataStore("memory://trainer-test-append-only")
    opened = store.fs.open

    def append_only(name: str, mode: str = "rb", **options: object):  # -> file
        handle = opened(name, mode, **options)
        return _AppendOnly(handle) if "w" in mode else handle

    monkeypatch.setattr(store.fs, "open", append_only)
    config = TrainerSettings(
        tlc_url_template=tlc_server.url_template,
        download_retries=1,
        download_retry_wait_seconds=0.01,
    )
    manifest = load_month(store, fhv, MONTH, "tlc", config, logger)
    assert manifest.rows == 50_000 and manifest.bytes == path.stat().st_size
    assert tlc_server.requests(path) == ["bytes=-65536", None, None]


class _AppendOnly:
    """A file being written that cannot seek, like an object store's."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle

    def write(self, data: bytes) -> int:
        return self.handle.write(data)

    def seekable(self) -> bool:
        return False

    def __enter__(self) -> "_AppendOnly":
        return self

    def __exit__(self, *error: object) -> None:
        self.handle.close()
