"""The backup archive (devstack.archive): a manifest first, every member checked against it."""

import io
import json
import tarfile
from pathlib import Path

import pytest

from devstack.archive import MANIFEST, ArchiveError, Manifest, read_archive, write_archive


def manifest() -> Manifest:
    return Manifest(
        created="2026-11-29T20:00:00+00:00",
        stack="dev",
        versions={"stack": "0.1.0", "prefect": "3.8.8", "mlflow": "3.17.2", "postgresql": "18.1"},
        databases={"prefect": "prefect", "app": "app"},
        stores={"data": "/var/data"},
    )


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    staging = tmp_path / "staging"
    (staging / "databases").mkdir(parents=True)
    (staging / "databases" / "prefect.pgdump").write_bytes(b"PGDMP" + bytes(range(256)) * 50)
    (staging / "databases" / "app.pgdump").write_bytes(b"PGDMP app")
    (staging / "stores" / "data" / "fhv").mkdir(parents=True)
    (staging / "stores" / "data" / "fhv" / "2021-06.parquet").write_bytes(b"PAR1" * 1000)
    out = tmp_path / "out" / "b.tar.gz"
    write_archive(staging, manifest(), out, lambda _: None)
    return out


def rewrite(source: Path, out: Path, change) -> Path:
    """A copy of the archive `source` whose members went through `change(name, bytes)`: bytes
    to keep (maybe altered), or None to leave the member out."""
    with tarfile.open(source, "r:gz") as tar, tarfile.open(out, "w:gz") as new:
        for info in tar:
            if not info.isfile():
                continue
            data = change(info.name, tar.extractfile(info).read())
            if data is not None:
                info.size = len(data)
                new.addfile(info, io.BytesIO(data))
    return out


def test_round_trip_with_checksums_and_the_manifest_first(archive: Path, tmp_path: Path) -> None:
    with tarfile.open(archive, "r:gz") as tar:
        names = tar.getnames()
        listed = json.loads(tar.extractfile(MANIFEST).read())
    assert names[0] == MANIFEST
    assert {m["name"] for m in listed["members"]} == set(names[1:])
    assert all(len(m["sha256"]) == 64 for m in listed["members"])
    assert listed["versions"]["postgresql"] == "18.1" and listed["format_version"] == 1
    into = tmp_path / "into"
    read = read_archive(archive, into, lambda _: None)
    assert read.databases == {"prefect": "prefect", "app": "app"}
    assert (into / "stores/data/fhv/2021-06.parquet").read_bytes() == b"PAR1" * 1000
    assert not (archive.parent / "b.tar.gz.partial").exists()


def test_a_corrupt_member_is_refused(archive: Path, tmp_path: Path) -> None:
    def flip(name: str, data: bytes) -> bytes:
        return data[:-1] + b"X" if name == "databases/app.pgdump" else data

    bad = rewrite(archive, tmp_path / "bad.tar.gz", flip)
    with pytest.raises(ArchiveError, match=r"is corrupt: databases/app.pgdump has sha256"):
        read_archive(bad, tmp_path / "into", lambda _: None)


def test_a_missing_member_is_refused(archive: Path, tmp_path: Path) -> None:
    def drop(name: str, data: bytes) -> bytes | None:
        return None if name.startswith("stores/") else data

    bad = rewrite(archive, tmp_path / "bad.tar.gz", drop)
    with pytest.raises(ArchiveError, match=r"incomplete: 1 members .* stores/data/fhv/2021-06"):
        read_archive(bad, tmp_path / "into", lambda _: None)


def test_a_member_not_in_the_manifest_is_refused(archive: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.tar.gz"
    with tarfile.open(archive, "r:gz") as tar:
        members = [(i, tar.extractfile(i).read()) for i in tar if i.isfile()]
    extra = tarfile.TarInfo("stores/data/evil.sh")
    members.append((extra, b"rm -rf /"))
    with tarfile.open(bad, "w:gz") as tar:
        for info, data in members:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(ArchiveError, match=r"'stores/data/evil.sh' is not in its manifest"):
        read_archive(bad, tmp_path / "into", lambda _: None)


def test_a_path_outside_the_archive_is_refused(archive: Path, tmp_path: Path) -> None:
    def escape(name: str, data: bytes) -> bytes:
        if name == MANIFEST:
            listed = json.loads(data)
            listed["members"][0]["name"] = "../escaped"
            return json.dumps(listed).encode()
        return data

    bad = rewrite(archive, tmp_path / "bad.tar.gz", escape)
    with tarfile.open(bad, "r:gz") as tar:
        members = [(i, tar.extractfile(i).read()) for i in tar]
    members[1][0].name = "../escaped"  # the first member after the manifest
    with tarfile.open(bad, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(ArchiveError, match=r"points outside the archive"):
        read_archive(bad, tmp_path / "into", lambda _: None)
    assert not (tmp_path / "escaped").exists()


def test_a_tarball_without_our_manifest_is_refused(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.tar.gz"
    with tarfile.open(foreign, "w:gz") as tar:
        info = tarfile.TarInfo("README")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    with pytest.raises(ArchiveError, match=r"not a backup of this stack: no manifest.json first"):
        read_archive(foreign, tmp_path / "into", lambda _: None)


def test_another_format_s_manifest_is_refused(archive: Path, tmp_path: Path) -> None:
    def other(name: str, data: bytes) -> bytes:
        return json.dumps({"format": "other-backup"}).encode() if name == MANIFEST else data

    bad = rewrite(archive, tmp_path / "bad.tar.gz", other)
    with pytest.raises(ArchiveError, match=r"not a backup of this stack: .* 'other-backup'"):
        read_archive(bad, tmp_path / "into", lambda _: None)


@pytest.mark.parametrize("damage", ["truncated", "not gzip"])
def test_a_damaged_file_is_refused(archive: Path, tmp_path: Path, damage: str) -> None:
    raw = archive.read_bytes()
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(raw[: len(raw) // 2] if damage == "truncated" else b"PK\x03\x04" + raw[4:])
    with pytest.raises(ArchiveError, match=r"not a readable .tar.gz|not a backup"):
        read_archive(bad, tmp_path / "into", lambda _: None)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match=r"no such file"):
        read_archive(tmp_path / "nope.tar.gz", tmp_path / "into", lambda _: None)
