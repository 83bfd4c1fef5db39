"""One repository on disk: chunks shared by every restore point of every policy and
computer in it.

    <repository>/config.json             format version, id and chunker settings, written once
    <repository>/locks/                  see lock.py
    <repository>/chunks/<ab>/<sha256>    large chunks, one file each, named by their SHA-256
    <repository>/packs/<xy>/<pack id>    small chunks, many to a pack (see packs.py)
    <repository>/index/<id>.json         which pack holds which chunk
    <repository>/points/<id>.jsonl.zst   one manifest per committed restore point
    <repository>/points/<id>.chunks      the chunks it names, for collection (checksummed)
    <repository>/damaged/<sha256>        chunks verify found damaged; a backup heals them
    <repository>/tmp/                    files being written, never read as data

Write ordering is restic's: chunks and packs are written under tmp/, fsynced and renamed
into place; an index is written after the packs it names; a manifest is written only
once every chunk it names is durable, and appears under points/ by one atomic rename. So
a restore point exists only when all of its data does, and a killed writer leaves at most
unreferenced data (the next collection removes it) and files under tmp/.

A repository has an id, in its config. It is created only where nothing was before and no
job of the policy ever wrote: a missing repository where one existed is an unmounted
share, and fails the job instead of silently starting anew. Version 1 repositories (every
chunk a file, no id) are read as they are and given an id on their first backup.
"""

import hashlib
import json
import logging
import secrets
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from . import chunks, lock
from .chunkstore import ChunkStore
from .errors import DamagedData, PointNotFound, RepositoryError
from .files import create_once, sync_directory, write_atomically
from .manifest import (
    POINT_ID,
    Manifest,
    PointSummary,
    check_frame,
    encode,
    read_manifest,
    read_summary,
)

log = logging.getLogger("agent_stub.engine")

FORMAT_NAME = "backup-agent repository"
VERSION = 2
READS = (1, 2)
CONFIG_NAME = "config.json"
MANIFEST_SUFFIX = ".jsonl.zst"
CHUNK_LIST_SUFFIX = ".chunks"
CHUNK_LIST_MAGIC = b"backup-agent chunk list 1\n"
PREFIXES = [f"{byte:02x}" for byte in range(256)]


class RepositoryMissing(RepositoryError):
    """The repository a policy wrote to is not where it was (an unmounted share?)."""


class Repository(ChunkStore):
    """Chunks, packs and manifests under `root`; open one with `create` or `open`."""

    def __init__(self, root: Path, config: dict[str, Any]) -> None:
        # Version 1 stored every chunk as a file: a small one may be there too.
        super().__init__(root, small_files=config.get("version") == 1)
        self.config = config
        self.id: str = str(config.get("id", ""))
        self.chunker_settings: dict[str, Any] = config["chunker"]
        self.points = root / "points"

    @classmethod
    def create(
        cls, root: Path, expected_ids: Iterable[str] = (), agent_id: str = ""
    ) -> "Repository":
        """Opens the repository for writing. Makes it first if `root` is empty or missing
        and no id is expected; RepositoryMissing if one was expected and is not there."""
        expected = list(expected_ids)
        if expected and not (root / CONFIG_NAME).exists():
            raise RepositoryMissing(
                f"repository {root} is missing: expected id {expected[-1]}; is the share mounted?"
            )
        if not expected:
            cls._make(root)
        repository = cls.open(root)
        if expected and repository.id not in expected:
            raise RepositoryMissing(
                f"repository {root} has id {repository.id or '(none)'}, expected id "
                f"{expected[-1]}: another repository is there; is the right share mounted?"
            )
        for directory in (
            repository.points,
            repository.tmp,
            repository.chunks,
            repository.packs,
            repository.index,
            repository.damaged,
        ):
            directory.mkdir(mode=0o700, exist_ok=True)
        for prefix in PREFIXES:
            (repository.chunks / prefix).mkdir(mode=0o700, exist_ok=True)
        lock.create(root)
        if not repository.id:
            repository._adopt(agent_id)
        return repository

    @classmethod
    def _make(cls, root: Path) -> None:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        if (root / CONFIG_NAME).exists():
            return
        strangers = [p.name for p in root.iterdir() if CONFIG_NAME not in p.name]
        if strangers:
            raise RepositoryError(
                f"{root} is not empty and holds no {CONFIG_NAME}: not a backup repository"
            )
        config = {
            "format": FORMAT_NAME,
            "version": VERSION,
            "id": secrets.token_hex(16),
            "chunker": chunks.CHUNKER_SETTINGS,
        }
        # Two jobs making the repository at once: the first link wins, the other reads it.
        create_once(root / CONFIG_NAME, (json.dumps(config, indent=2) + "\n").encode(), root)

    def _adopt(self, agent_id: str) -> None:
        """Gives a version 1 repository its id, once, while nobody else uses it."""
        with lock.exclusive_if_free(self.root, agent_id) as alone:
            if not alone:
                return
            current = type(self).open(self.root)
            if current.id:
                self.id = current.id
                return
            config = {**current.config, "id": secrets.token_hex(16)}
            write_atomically(self.root / CONFIG_NAME, json.dumps(config, indent=2) + "\n", self.tmp)
            sync_directory(self.root)
            self.config, self.id = config, config["id"]

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
        if config.get("version") not in READS:
            raise RepositoryError(
                f"{root} has repository version {config.get('version')!r}; "
                f"this agent reads versions {', '.join(map(str, READS))}"
            )
        if not isinstance(config.get("id", ""), str) or not isinstance(config.get("chunker"), dict):
            raise RepositoryError(f"{root / CONFIG_NAME} is malformed")
        return cls(root, config)

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
        """Makes the restore point exist: one atomic rename, then a durable directory.

        Its chunk list goes first, beside it: collection reads that instead of the whole
        manifest (a manifest of 100,000 files takes seconds to parse, the list a moment).
        """
        names = {name for entry in manifest.entries for name in entry.chunks}
        digests = [bytes.fromhex(name) for name in sorted(names)]
        self.commit_encoded(manifest.summary.id, encode(manifest), digests)

    def commit_encoded(self, point_id: str, encoded: bytes, digests: list[bytes]) -> None:
        """`commit_point` for a manifest already encoded (see spool.py), with the sorted
        raw digests of the chunks it names."""
        body = b"".join(digests)
        sidecar = CHUNK_LIST_MAGIC + hashlib.sha256(body).digest() + body
        write_atomically(self.chunk_list_path(point_id), sidecar, self.tmp)
        write_atomically(self.manifest_path(point_id), encoded, self.tmp)
        sync_directory(self.points)

    def chunk_list_path(self, point_id: str) -> Path:
        return self.points / f"{point_id}{CHUNK_LIST_SUFFIX}"

    def point_chunks(self, point_id: str) -> set[str]:
        """Every chunk the point names: from its chunk list when that is intact, else
        from its manifest (PointNotFound or DamagedData as `read_point`)."""
        try:
            sidecar = self.chunk_list_path(point_id).read_bytes()
        except OSError:
            sidecar = b""
        head, digest = len(CHUNK_LIST_MAGIC), len(CHUNK_LIST_MAGIC) + 32
        body = sidecar[digest:]
        if (
            sidecar[:head] == CHUNK_LIST_MAGIC
            and len(body) % 32 == 0
            and hashlib.sha256(body).digest() == sidecar[head:digest]
        ):
            subject = f"restore point {point_id}"
            try:
                with open(self.manifest_path(point_id), "rb") as stream:
                    check_frame(stream, subject)
            except FileNotFoundError:
                raise PointNotFound(f"restore point {point_id} not found in {self.root}") from None
            except OSError as error:
                raise DamagedData(subject, f"unreadable manifest ({error.strerror})") from None
            return {body[at : at + 32].hex() for at in range(0, len(body), 32)}
        manifest = self.read_point(point_id)
        return {name for entry in manifest.entries for name in entry.chunks}

    def remove_point(self, point_id: str) -> None:
        self.manifest_path(point_id).unlink(missing_ok=True)
        self.chunk_list_path(point_id).unlink(missing_ok=True)

    def remove_orphan_chunk_lists(self) -> None:
        """Chunk lists whose manifest is gone (a retention killed between the two)."""
        for path in self.points.glob(f"*{CHUNK_LIST_SUFFIX}"):
            point_id = path.name.removesuffix(CHUNK_LIST_SUFFIX)
            if not (self.points / f"{point_id}{MANIFEST_SUFFIX}").exists():
                path.unlink(missing_ok=True)

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
