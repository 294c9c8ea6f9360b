import io
import logging
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from testkit.tlc import TlcServer
from trainer.datasets import Dataset, SchemaError
from trainer.downloads import DownloadError
from trainer.loading import load_month
from trainer.settings import TrainerSettings
from trainer.store import CorruptMonthError, DataStore, MonthNotLoadedError
from trainer.synthetic import generate_month

logger = logging.getLogger("test")


def _settings(template: str = "http://127.0.0.1:9/{dataset}_{month}") -> TrainerSettings:
    return TrainerSettings(
        tlc_url_template=template,
        synthetic_rows=5_000,
        download_retries=2,
        download_retry_wait_seconds=0.01,
    )


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_missing_month_names_the_month_the_file_and_the_fix(tmp_path: Path, fhv: Dataset) -> None:
    store = DataStore(str(tmp_path))
    with pytest.raises(MonthNotLoadedError) as error:
        store.read_month(fhv, "2021-06")
    message = str(error.value)
    assert "fhv data for 2021-06 is not in the data store" in message
    assert str(tmp_path / "fhv" / "fhv_tripdata_2021-06.parquet") in message
    assert "load-data" in message and "auto_load=true" in message


def test_synthetic_month_is_stored_once_with_its_source(tmp_path: Path, fhv: Dataset) -> None:
    store = DataStore(str(tmp_path))
    first = load_month(store, fhv, "2021-06", "synthetic", _settings(), logger)
    assert first.source == "synthetic" and first.rows == 5_000
    assert _files(tmp_path) == ["fhv/fhv_tripdata_2021-06.json", "fhv/fhv_tripdata_2021-06.parquet"]
    mtime = (tmp_path / "fhv/fhv_tripdata_2021-06.parquet").stat().st_mtime_ns
    again = load_month(store, fhv, "2021-06", "synthetic", _settings(), logger)
    assert again == first
    assert (tmp_path / "fhv/fhv_tripdata_2021-06.parquet").stat().st_mtime_ns == mtime
    assert len(store.read_month(fhv, "2021-06")) == 5_000


def test_a_failed_write_leaves_nothing_behind(tmp_path: Path, fhv: Dataset) -> None:
    store = DataStore(str(tmp_path))

    def half_then_fail(handle: io.BufferedWriter) -> None:
        handle.write(b"PAR1" + b"\0" * 1000)
        raise OSError("disk went away")

    with pytest.raises(OSError, match="disk went away"):
        store.write_month(fhv, "2021-06", half_then_fail, lambda rows, size: None)
    assert _files(tmp_path) == []


def test_download_with_progress(
    tmp_path: Path, fhv: Dataset, tlc_server: TlcServer, caplog: pytest.LogCaptureFixture
) -> None:
    tlc_server.publish(fhv, "2021-06", rows=50_000)
    store = DataStore(str(tmp_path / "store"))
    with caplog.at_level(logging.INFO, logger="test"):
        manifest = load_month(
            store, fhv, "2021-06", "tlc", _settings(tlc_server.url_template), logger
        )
    assert manifest.source == "tlc" and manifest.rows == 50_000
    assert manifest.origin == tlc_server.url_template.format(dataset="fhv", month="2021-06")
    progress = [r.getMessage() for r in caplog.records if r.getMessage().startswith("downloaded")]
    assert any("(100%)" in line for line in progress), progress
    assert store.read_manifest(fhv, "2021-06").source == "tlc"


def test_unpublished_month_is_a_clear_download_error(
    tmp_path: Path, fhv: Dataset, tlc_server: TlcServer
) -> None:
    store = DataStore(str(tmp_path / "store"))
    with pytest.raises(DownloadError, match=r"does not exist \(HTTP 404\)"):
        load_month(store, fhv, "2030-01", "tlc", _settings(tlc_server.url_template), logger)
    assert _files(tmp_path / "store") == []


def test_unreachable_server_is_a_clear_download_error(tmp_path: Path, fhv: Dataset) -> None:
    store = DataStore(str(tmp_path))
    with pytest.raises(DownloadError, match=re.escape("could not download http://127.0.0.1:9/")):
        load_month(store, fhv, "2021-06", "tlc", _settings(), logger)
    assert _files(tmp_path) == []


def test_truncated_download_is_rejected_and_not_stored(
    tmp_path: Path, fhv: Dataset, tlc_server: TlcServer
) -> None:
    published = tlc_server.publish(fhv, "2021-06")
    published.write_bytes(published.read_bytes()[:-2000])
    store = DataStore(str(tmp_path / "store"))
    with pytest.raises(CorruptMonthError, match="is not a readable parquet file"):
        load_month(store, fhv, "2021-06", "tlc", _settings(tlc_server.url_template), logger)
    assert _files(tmp_path / "store") == []


def test_file_without_the_needed_columns_is_rejected(
    tmp_path: Path, fhv: Dataset, tlc_server: TlcServer
) -> None:
    table = generate_month(fhv, "2021-06", 1_000, seed=1).drop_columns(["DOlocationID"])
    pq.write_table(table, tlc_server.root / "fhv_tripdata_2021-06.parquet")
    store = DataStore(str(tmp_path / "store"))
    with pytest.raises(SchemaError, match="'DOlocationID' is missing"):
        load_month(store, fhv, "2021-06", "tlc", _settings(tlc_server.url_template), logger)
    assert _files(tmp_path / "store") == []


def test_corrupt_stored_month_tells_how_to_reload(tmp_path: Path, fhv: Dataset) -> None:
    store = DataStore(str(tmp_path))
    load_month(store, fhv, "2021-06", "synthetic", _settings(), logger)
    path = tmp_path / "fhv/fhv_tripdata_2021-06.parquet"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CorruptMonthError, match="force=true"):
        store.read_month(fhv, "2021-06")
    reloaded = load_month(store, fhv, "2021-06", "synthetic", _settings(), logger, force=True)
    assert len(store.read_month(fhv, "2021-06")) == reloaded.rows


def test_any_fsspec_url_works(fhv: Dataset) -> None:
    store = DataStore("memory://trainer-test-store")
    manifest = load_month(store, fhv, "2021-06", "synthetic", _settings(), logger)
    assert manifest.rows == 5_000
    assert len(store.read_month(fhv, "2021-06")) == 5_000
    assert store.read_manifest(fhv, "2021-06").source == "synthetic"
