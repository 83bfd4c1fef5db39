"""One repository on disk: chunks shared by every restore point of every policy in it.

    <repository>/config.json             format version and chunker settings, written once
    <repository>/lock                    see lock.py
    <repository>/chunks/<ab>/<sha256>    one file per chunk, named by the SHA-256 of its bytes
    <repository>/points/<id>.jsonl.zst   one manifest per committed restore point
    <repository>/tmp/                    files being written, never read as data

Write ordering is restic's: a chunk is written under tmp/, fsynced and renamed into
chunks/; a manifest is written only once every chunk it names and their directories are
fsynced, and appears under points/ by one atomic rename. So a restore point exists only
when all of its data does, and a killed writer leaves at most unreferenced chunks (the
next collection removes them) and files under tmp/ (removed by a collection or at start).
"""

import json
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from . import chunks, lock
from .errors import DamagedData, PointNotFound, RepositoryError
from .files import sync_directory, write_atomically
from .manifest import DIGEST, POINT_ID, Manifest, PointSummary, encode, read_manifest, read_summary

FORMAT_NAME = "backup-agent repository"
VERSION = 1
CONFIG_NAME = "config.json"
MANIFEST_SUFFIX = ".jsonl.zst"
PREFIXES = [f"{byte:02x}" for byte in range(256)]


class Repository:
    """Chunks and manifests under `root`; open one with `create` or `open`."""

    def __init__(self, root: Path, config: dict[str, Any]) -> None:
        self.root = root
        self.config = config
        self.chunker_settings: dict[str, Any] = config["chunker"]
        self.chunks = root / "chunks"
        self.points = root / "points"
        self.tmp = root / "tmp"

    @classmethod
    def create(cls, root: Path) -> "Repository":
        """Opens the repository for writing, making it first if `root` is empty or missing."""
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        config_path = root / CONFIG_NAME
        if not config_path.exists():
            strangers = [p.name for p in root.iterdir() if CONFIG_NAME not in p.name]
            if strangers:
                raise RepositoryError(
                    f"{root} is not empty and holds no {CONFIG_NAME}: not a backup repository"
                )
            config = {"format": FORMAT_NAME, "version": VERSION, "chunker": chunks.CHUNKER_SETTINGS}
            # Two jobs making the repository at once write the same config: either may win.
            write_atomically(config_path, json.dumps(config, indent=2) + "\n")
            sync_directory(root)
        repository = cls.open(root)
        for directory in (repository.points, repository.tmp, repository.chunks):
            directory.mkdir(mode=0o700, exist_ok=True)
        for prefix in PREFIXES:
            (repository.chunks / prefix).mkdir(mode=0o700, exist_ok=True)
        lock.create(root)
        return repository

    @classmethod
    def open(cls, root: Path) -> "Repository":
        """Opens an existing repository; RepositoryError if `root` is not one this reads."""
        try:
            config = json.loads((root / CONFIG_NAME).read_text())
        except FileNotFoundError:
            raise RepositoryError(f"{root} is not a backup repository (no {CONFIG_NAME})") from None
        except (OSError, ValueError) as error:
            raise RepositoryError(f"{root / CONFIG_NAME} is unreadable: {error}") from None
        if not isinstance(config, dict) or config.get("format") != FORMAT_NAME:
            raise RepositoryError(f"{root} is not a backup repository")
        if config.get("version") != VERSION:
            raise RepositoryError(
                f"{root} has repository version {config.get('version')!r}; "
                f"this agent reads version {VERSION}"
            )
        return cls(root, config)

    # chunks

    def chunk_path(self, name: str) -> Path:
        return self.chunks / name[:2] / name

    def has_chunk(self, name: str) -> bool:
        return self.chunk_path(name).exists()

    def put_chunk(self, name: str, data: bytes) -> int:
        """Stores a chunk durably under its name; returns the bytes it takes on disk."""
        stored = chunks.pack(data)
        write_atomically(self.chunk_path(name), stored, self.tmp)
        return len(stored)

    def read_chunk(self, name: str) -> bytes:
        """The chunk's bytes, checked against its name; DamagedData if they do not match."""
        subject = f"chunk {name}"
        try:
            stored = self.chunk_path(name).read_bytes()
        except FileNotFoundError:
            raise DamagedData(subject, "missing") from None
        except OSError as error:
            raise DamagedData(subject, f"unreadable ({error.strerror})") from None
        try:
            data = chunks.unpack(stored)
        except ValueError as error:
            raise DamagedData(subject, str(error)) from None
        if chunks.digest(data) != name:
            raise DamagedData(subject, "content does not match its SHA-256 name")
        return data

    def chunk_names(self) -> Iterator[str]:
        for prefix in PREFIXES:
            with os.scandir(self.chunks / prefix) as found:
                for entry in found:
                    if DIGEST.fullmatch(entry.name):
                        yield entry.name

    def remove_chunk(self, name: str) -> int:
        """Deletes a chunk; returns the bytes freed (0 if it was already gone)."""
        path = self.chunk_path(name)
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return 0
        return size

    def sync_chunk_directories(self, names: Iterable[str]) -> None:
        """Makes the renames of these chunks durable before a manifest may name them."""
        for prefix in sorted({name[:2] for name in names}):
            sync_directory(self.chunks / prefix)

    # restore points

    def manifest_path(self, point_id: str) -> Path:
        if not POINT_ID.fullmatch(point_id):
            raise PointNotFound(f"{point_id[:80]!r} is not a restore point id")
        return self.points / f"{point_id}{MANIFEST_SUFFIX}"

    def point_ids(self) -> list[str]:
        names = (path.name for path in self.points.glob(f"*{MANIFEST_SUFFIX}"))
        return sorted(name.removesuffix(MANIFEST_SUFFIX) for name in names)

    def summaries(self) -> tuple[list[PointSummary], list[DamagedData]]:
        """Every committed point's summary, newest first, and the manifests that are damaged."""
        found: list[PointSummary] = []
        damaged: list[DamagedData] = []
        for point_id in self.point_ids():
            subject = f"restore point {point_id}"
            try:
                with open(self.manifest_path(point_id), "rb") as stream:
                    summary = read_summary(stream, subject)
            except FileNotFoundError:
                continue  # removed by retention since it was listed
            except (OSError, PointNotFound) as error:
                damaged.append(DamagedData(subject, f"unreadable manifest ({error})"))
                continue
            except DamagedData as error:
                damaged.append(error)
                continue
            if summary.id != point_id:
                damaged.append(DamagedData(subject, f"its manifest names {summary.id!r}"))
                continue
            found.append(summary)
        return newest_first(found), damaged

    def read_point(self, point_id: str) -> Manifest:
        subject = f"restore point {point_id}"
        try:
            with open(self.manifest_path(point_id), "rb") as stream:
                manifest = read_manifest(stream, subject)
        except FileNotFoundError:
            raise PointNotFound(f"restore point {point_id} not found in {self.root}") from None
        except OSError as error:
            raise DamagedData(subject, f"unreadable manifest ({error.strerror})") from None
        if manifest.summary.id != point_id:
            raise DamagedData(subject, f"its manifest names {manifest.summary.id!r}")
        return manifest

    def commit_point(self, manifest: Manifest) -> None:
        """Makes the restore point exist: one atomic rename, then a durable directory."""
        write_atomically(self.manifest_path(manifest.summary.id), encode(manifest), self.tmp)
        sync_directory(self.points)

    def remove_point(self, point_id: str) -> None:
        self.manifest_path(point_id).unlink(missing_ok=True)

    # temporary files

    def clear_tmp(self) -> None:
        """Removes what killed writers left; only while holding the lock alone."""
        for path in self.tmp.iterdir():
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def newest_first(summaries: Iterable[PointSummary]) -> list[PointSummary]:
    return sorted(summaries, key=lambda point: (point.create_ns, point.id), reverse=True)
