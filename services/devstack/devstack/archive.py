"""The backup archive: one `.tar.gz` whose first member is a manifest (`manifest.json`)
naming every other member with its size and sha256, beside the versions that made it.

Plain standard library and pure file work: what is *in* the archive (database dumps, the
stores) is `devstack.backup`'s business. A restore reads the whole archive into a staging
directory and checks it against the manifest before anything of the stack is touched.
"""

import gzip
import hashlib
import io
import json
import os
import tarfile
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

FORMAT = "training-stack-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CHUNK = 1 << 20


class ArchiveError(RuntimeError):
    """An archive that is not ours, not whole, or not what its manifest says."""


@dataclass(frozen=True)
class Member:
    name: str  # a relative POSIX path inside the archive
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    created: str  # UTC, ISO 8601
    stack: str  # "compose" or "dev": the kind of stack it was taken from
    versions: dict[str, str]  # stack, prefect, mlflow, postgresql
    databases: dict[str, str]  # role (prefect, mlflow, app) -> the database's name there
    stores: dict[str, str]  # store (data, models, mlflow-artifacts) -> where it was
    members: tuple[Member, ...] = ()
    skipped: dict[str, str] = field(default_factory=dict)  # what was left out, and why
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=2, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> "Manifest":
        try:
            data = json.loads(raw)
            if data.get("format") != FORMAT:
                raise ArchiveError(
                    f"not a backup of this stack: its manifest's format is "
                    f"{data.get('format')!r}, not {FORMAT!r}"
                )
            if data.get("format_version") != FORMAT_VERSION:
                raise ArchiveError(
                    f"backup format version {data.get('format_version')!r}: this version of "
                    f"the stack reads version {FORMAT_VERSION} only"
                )
            members = tuple(Member(**m) for m in data.pop("members"))
            return cls(**data, members=members)
        except ArchiveError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            raise ArchiveError(
                f"not a backup of this stack: unreadable manifest ({error})"
            ) from error


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def staged_members(staging: Path) -> tuple[Member, ...]:
    """Every regular file under `staging`, with its size and sha256, in name order."""
    files = sorted(p for p in staging.rglob("*") if p.is_file() and not p.is_symlink())
    return tuple(
        Member(p.relative_to(staging).as_posix(), p.stat().st_size, sha256_of(p)) for p in files
    )


def write_archive(
    staging: Path, manifest: Manifest, out: Path, progress: Callable[[str], None] = print
) -> Manifest:
    """Write `staging`'s files to `out` (`.tar.gz`), the manifest first, with their checksums.

    Written to `out.partial` and renamed at the end: `out` is whole or absent."""
    manifest = Manifest(**{**asdict(manifest), "members": staged_members(staging)})
    manifest = Manifest.from_json(manifest.to_json())  # the same shapes as when read back
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    total = sum(m.size for m in manifest.members)
    progress(f"writing {out}: {len(manifest.members)} files, {total / 1e6:.1f} MB before gzip")
    with tarfile.open(partial, "w:gz", compresslevel=6) as tar:
        raw = manifest.to_json()
        info = tarfile.TarInfo(MANIFEST)
        info.size, info.mode = len(raw), 0o644
        tar.addfile(info, io.BytesIO(raw))
        for member in manifest.members:
            tar.add(staging / member.name, arcname=member.name, recursive=False)
    os.replace(partial, out)
    return manifest


def read_archive(path: Path, into: Path, progress: Callable[[str], None] = print) -> Manifest:
    """Extract `path` into the empty directory `into` and check it: the manifest first and
    ours, every member listed with its size and sha256, none missing, none extra, no path
    outside `into`. Raises ArchiveError naming what is wrong."""
    if not path.is_file():
        raise ArchiveError(f"{path}: no such file")
    try:
        with tarfile.open(path, "r:gz") as tar:
            first = tar.next()
            if first is None or first.name != MANIFEST or not first.isfile():
                raise ArchiveError(f"{path} is not a backup of this stack: no {MANIFEST} first")
            manifest = Manifest.from_json(_read(tar, first))
            expected = {m.name: m for m in manifest.members}
            seen: set[str] = set()
            for info in tar:  # from the start again: the manifest first
                if info is first or info.isdir():
                    continue
                name = _safe_name(info.name)
                if not info.isfile() or name not in expected or name in seen:
                    raise ArchiveError(f"{path}: member {info.name!r} is not in its manifest")
                target = into / name
                target.parent.mkdir(parents=True, exist_ok=True)
                digest, size = _extract(tar, info, target)
                if (size, digest) != (expected[name].size, expected[name].sha256):
                    raise ArchiveError(
                        f"{path} is corrupt: {name} has sha256 {digest[:12]}… ({size} bytes), "
                        f"its manifest says {expected[name].sha256[:12]}… "
                        f"({expected[name].size} bytes)"
                    )
                seen.add(name)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise ArchiveError(
            f"{path} is not a readable .tar.gz (corrupt or truncated): {error}"
        ) from error
    missing = sorted(set(expected) - seen)
    if missing:
        raise ArchiveError(
            f"{path} is incomplete: {len(missing)} members of its manifest are "
            f"missing, e.g. {missing[0]}"
        )
    progress(f"checked {path}: {len(seen)} files, every sha256 as in its manifest")
    return manifest


def _safe_name(name: str) -> str:
    parts = PurePosixPath(name).parts
    if not parts or name.startswith("/") or ".." in parts:
        raise ArchiveError(f"archive member {name!r} points outside the archive")
    return PurePosixPath(*parts).as_posix()


def _read(tar: tarfile.TarFile, info: tarfile.TarInfo) -> bytes:
    file = tar.extractfile(info)
    assert file is not None
    return file.read()


def _extract(tar: tarfile.TarFile, info: tarfile.TarInfo, target: Path) -> tuple[str, int]:
    """Write the member's bytes to `target`; its sha256 and size."""
    source, digest, size = tar.extractfile(info), hashlib.sha256(), 0
    assert source is not None
    with open(target, "wb") as out:
        while chunk := source.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
            out.write(chunk)
    return digest.hexdigest(), size
