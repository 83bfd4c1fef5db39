"""A repository's chunks: large ones as files of their own, small ones in packs (see
packs.py) found through the index, and the record of those verify found damaged.

Repository (repository.py) adds the identity and the restore points around it.
"""

import logging
import os
import secrets
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import chunks, packs
from .errors import DamagedData
from .files import make_durable, sync_directory, write_atomically, write_unsynced
from .manifest import DIGEST

log = logging.getLogger("agent_stub.engine")

PREFIXES = [f"{byte:02x}" for byte in range(256)]
# Chunks smaller than this go into packs; larger ones stay files of their own, where a
# create and an fsync are small next to the data (and a damaged one is easy to find).
PACK_BELOW = 96 * 1024
# Threads checking packs: decompression and SHA-256 release the GIL, and a pack is the
# unit of work, so two cores are busy.
CHECK_THREADS = 2


class ChunkStore:
    """The chunks under `root`, packed or not."""

    def __init__(self, root: Path, small_files: bool) -> None:
        self.root = root
        self.chunks = root / "chunks"
        self.packs = root / "packs"
        self.index = root / "index"
        self.damaged = root / "damaged"
        self.tmp = root / "tmp"
        self.small_files = small_files
        self._locations: packs.ChunkIndex | None = None
        self._damaged: set[str] | None = None
        self.index_problems: list[str] = []

    @property
    def locations(self) -> packs.ChunkIndex:
        """Where each packed chunk is, from every index file (a later file wins)."""
        if self._locations is None:
            self._locations = packs.ChunkIndex()
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

    def forget_locations(self) -> None:
        """Drops what was read of the index (not the damage records): read again on use."""
        self._locations = None

    def add_locations(self, found: dict[str, list[tuple[str, int, int]]]) -> None:
        locations = self.locations if self._locations is not None else packs.ChunkIndex()
        for pack_id, rows in found.items():
            locations.add(pack_id, rows)
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
        return bytes(_checked(name, self._stored(name, subject), subject))

    def check_chunks(self, names: Iterable[str]) -> Iterator[tuple[str, int | DamagedData]]:
        """Each chunk's size, or why it is damaged, checked as `read_chunk` checks it.

        Packed chunks are read pack by pack, each pack opened once and read in offset
        order (whole, when most of it is wanted), on two threads: decompressing and
        hashing release the GIL. One open and seek per small chunk cost more than the
        checking itself.
        """
        by_pack: dict[str, list[tuple[int, int, str]]] = {}
        loose: list[str] = []
        for name in names:
            where = self.locations.get(name)
            if where is None:
                loose.append(name)
            else:
                by_pack.setdefault(where[0], []).append((where[1], where[2], name))
        with ThreadPoolExecutor(CHECK_THREADS, thread_name_prefix="chunk-check") as pool:
            work = ((pack_id, sorted(rows)) for pack_id, rows in sorted(by_pack.items()))
            for checked in pool.map(lambda job: self._check_pack(*job), work):
                yield from checked
        for name in loose:
            try:
                yield name, len(self.read_chunk(name))
            except DamagedData as error:
                yield name, error

    def _check_pack(
        self, pack_id: str, rows: list[tuple[int, int, str]]
    ) -> list[tuple[str, int | DamagedData]]:
        """The sizes (or damage) of one pack's chunks at these (offset, length) rows."""
        done: list[tuple[str, int | DamagedData]] = []
        try:
            with open(packs.pack_path(self.packs, pack_id), "rb", buffering=0) as stream:
                size = os.fstat(stream.fileno()).st_size
                wanted = sum(length for _, length, _ in rows)
                whole = memoryview(stream.read()) if wanted * 2 >= size else None
                for offset, length, name in rows:
                    subject = f"chunk {name}"
                    if whole is not None:
                        stored = whole[offset : offset + length]
                    else:
                        stream.seek(offset)
                        stored = memoryview(stream.read(length))
                    if len(stored) != length:
                        truncated = DamagedData(subject, f"its pack {pack_id} is truncated")
                        done.append((name, truncated))
                        continue
                    try:
                        done.append((name, len(_checked(name, stored, subject))))
                    except DamagedData as error:
                        done.append((name, error))
        except OSError as error:
            if isinstance(error, FileNotFoundError):
                problem = f"missing (its pack {pack_id} is gone)"
            else:
                problem = f"unreadable ({error.strerror})"
            checked = {name for name, _ in done}
            done.extend(
                (name, DamagedData(f"chunk {name}", problem))
                for _, _, name in rows
                if name not in checked
            )
        return done

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


def _checked(name: str, stored: bytes | memoryview, subject: str) -> bytes | memoryview:
    """A chunk's bytes from its stored form, checked against its name (DamagedData)."""
    try:
        data = chunks.unpack(stored)
    except ValueError as error:
        raise DamagedData(subject, str(error)) from None
    if chunks.digest(data) != name:
        raise DamagedData(subject, "content does not match its SHA-256 name")
    return data
