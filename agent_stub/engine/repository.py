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
import os
import secrets
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from . import chunks, lock, packs
from .errors import DamagedData, PointNotFound, RepositoryError
from .files import create_once, make_durable, sync_directory, write_atomically, write_unsynced
from .manifest import (
    DIGEST,
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
# Chunks smaller than this go into packs; larger ones stay files of their own, where a
# create and an fsync are small next to the data (and a damaged one is easy to find).
PACK_BELOW = 96 * 1024


class RepositoryMissing(RepositoryError):
    """The repository a policy wrote to is not where it was (an unmounted share?)."""


class Repository:
    """Chunks, packs and manifests under `root`; open one with `create` or `open`."""

    def __init__(self, root: Path, config: dict[str, Any]) -> None:
        self.root = root
        self.config = config
        self.id: str = str(config.get("id", ""))
        self.chunker_settings: dict[str, Any] = config["chunker"]
        self.chunks = root / "chunks"
        self.packs = root / "packs"
        self.index = root / "index"
        self.points = root / "points"
        self.damaged = root / "damaged"
        self.tmp = root / "tmp"
        # Version 1 stored every chunk as a file: a small one may be there too.
        self.small_files = config.get("version") == 1
        self._locations: dict[str, packs.Location] | None = None
        self._damaged: set[str] | None = None
        self.index_problems: list[str] = []

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

    # chunks

    @property
    def locations(self) -> dict[str, packs.Location]:
        """Where each packed chunk is, from every index file (a later file wins)."""
        if self._locations is None:
            self._locations = {}
            self.index_problems = []
            try:
                names = sorted(p.name for p in self.index.iterdir() if p.suffix == ".json")
            except FileNotFoundError:
                names = []
            for name in names:
                try:
                    found = packs.read_index(self.index / name)
                except FileNotFoundError:
                    continue
                except (OSError, ValueError) as error:
                    self.index_problems.append(f"index {name}: unreadable ({error}); run repair")
                    continue
                self.add_locations(found)
        return self._locations

    def index_problems_now(self) -> list[str]:
        """Index files that cannot be read, after reading them all again."""
        self.reload_index()
        _ = self.locations
        return list(self.index_problems)

    def reload_index(self) -> None:
        """Forgets what was read of the index and the damage records: to be called once a
        lock is held, since another computer may have changed both before."""
        self._locations = None
        self._damaged = None

    def add_locations(self, found: dict[str, list[tuple[str, int, int]]]) -> None:
        locations = self.locations if self._locations is not None else {}
        for pack_id, rows in found.items():
            for name, offset, length in rows:
                locations[name] = (pack_id, offset, length)
        self._locations = locations

    @property
    def damaged_chunks(self) -> set[str]:
        if self._damaged is None:
            try:
                self._damaged = {p.name for p in self.damaged.iterdir() if DIGEST.fullmatch(p.name)}
            except FileNotFoundError:
                self._damaged = set()
        return self._damaged

    def mark_damaged(self, name: str) -> None:
        """Records that this chunk is damaged or missing, for the next backup to heal."""
        self.damaged_chunks.add(name)
        try:
            self.damaged.mkdir(mode=0o700, exist_ok=True)
            (self.damaged / name).touch()
        except OSError as error:  # a read-only repository: reported, just not recorded
            log.warning("damage to chunk %s not recorded in %s: %s", name, self.root, error)

    def mark_healed(self, name: str) -> None:
        self.damaged_chunks.discard(name)
        try:
            (self.damaged / name).unlink(missing_ok=True)
        except OSError as error:
            log.warning("healed chunk %s still recorded as damaged: %s", name, error)

    def chunk_path(self, name: str) -> Path:
        return self.chunks / name[:2] / name

    def has_chunk(self, name: str, size: int = PACK_BELOW) -> bool:
        """Whether the chunk is stored and not known damaged (`size` spares a small
        chunk's lookup on disk where small chunks are only ever packed)."""
        if name in self.damaged_chunks:
            return False
        if name in self.locations:
            return True
        if size < PACK_BELOW and not self.small_files:
            return False
        return self.chunk_path(name).exists()

    def put_chunk(self, name: str, data: bytes) -> int:
        """Stores a chunk durably as a file of its own; returns the bytes it takes on disk."""
        stored = chunks.pack(data)
        write_atomically(self.chunk_path(name), stored, self.tmp)
        return len(stored)

    def read_chunk(self, name: str) -> bytes:
        """The chunk's bytes, checked against its name; DamagedData if they do not match."""
        subject = f"chunk {name}"
        stored = self._stored(name, subject)
        try:
            data = chunks.unpack(stored)
        except ValueError as error:
            raise DamagedData(subject, str(error)) from None
        if chunks.digest(data) != name:
            raise DamagedData(subject, "content does not match its SHA-256 name")
        return data

    def _stored(self, name: str, subject: str) -> bytes:
        where = self.locations.get(name)
        if where is not None:
            pack_id, offset, length = where
            try:
                with open(packs.pack_path(self.packs, pack_id), "rb") as stream:
                    stream.seek(offset)
                    stored = stream.read(length)
            except FileNotFoundError:
                raise DamagedData(subject, f"missing (its pack {pack_id} is gone)") from None
            except OSError as error:
                raise DamagedData(subject, f"unreadable ({error.strerror})") from None
            if len(stored) != length:
                raise DamagedData(subject, f"its pack {pack_id} is truncated")
            return stored
        try:
            return self.chunk_path(name).read_bytes()
        except FileNotFoundError:
            raise DamagedData(subject, "missing") from None
        except OSError as error:
            raise DamagedData(subject, f"unreadable ({error.strerror})") from None

    def loose_chunk_names(self) -> Iterator[str]:
        for prefix in PREFIXES:
            try:
                with os.scandir(self.chunks / prefix) as found:
                    for entry in found:
                        if DIGEST.fullmatch(entry.name):
                            yield entry.name
            except FileNotFoundError:
                continue

    def chunk_names(self) -> Iterator[str]:
        """Every stored chunk: files of their own, then packed ones."""
        loose = set(self.loose_chunk_names())
        yield from loose
        yield from (name for name in self.locations if name not in loose)

    def pack_ids(self) -> list[str]:
        try:
            return sorted(p.name for p in self.packs.glob("*/*") if not p.name.startswith("."))
        except FileNotFoundError:
            return []

    def stage_chunk(self, name: str, data: bytes) -> tuple[str, Path, int]:
        """Writes a chunk under tmp/ without waiting for the disk; `place_chunks` makes
        a backup's staged chunks durable and moves them into place, all at once."""
        stored = chunks.pack(data)
        staged = self.tmp / f"chunk-{name}-{secrets.token_hex(4)}"
        write_unsynced(staged, stored)
        return name, staged, len(stored)

    def place_chunks(self, staged: list[tuple[str, Path, int]]) -> int:
        """Durable data first, then the renames, then durable renames (so a chunk's name
        never holds data the disk does not have); returns the flush calls made."""
        if not staged:
            return 0
        flushes = make_durable(self.tmp, [path for _, path, _ in staged])
        for name, path, _ in staged:
            os.replace(path, self.chunk_path(name))
        if flushes == 1:
            return 1 + make_durable(self.tmp, [])
        self.sync_chunk_directories(name for name, _, _ in staged)
        return flushes + len({name[:2] for name, _, _ in staged})

    def remove_chunk(self, name: str) -> int:
        """Deletes a chunk's own file; returns the bytes freed (0 if it was already gone)."""
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
        """Makes the restore point exist: one atomic rename, then a durable directory.

        Its chunk list goes first, beside it: collection reads that instead of the whole
        manifest (a manifest of 100,000 files takes seconds to parse, the list a moment).
        """
        names = {name for entry in manifest.entries for name in entry.chunks}
        body = b"".join(bytes.fromhex(name) for name in sorted(names))
        sidecar = CHUNK_LIST_MAGIC + hashlib.sha256(body).digest() + body
        write_atomically(self.chunk_list_path(manifest.summary.id), sidecar, self.tmp)
        write_atomically(self.manifest_path(manifest.summary.id), encode(manifest), self.tmp)
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
