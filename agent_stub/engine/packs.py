"""Pack files: many small chunks in one file, and the index saying where each one is.

A pack is a sequence of records, each the chunk's raw SHA-256 (32 bytes), the length of
its stored form (4 bytes, big-endian) and the stored form (see chunks.pack). So a pack
describes itself: `repair` rebuilds the index by reading the packs alone. A pack is
written under tmp/, fsynced once, then renamed to packs/<ab>/<pack id>; an index file
naming its chunks is written after the packs it names, before any manifest names them.

An index file is JSON: {"packs": {pack id: [[chunk, offset, length], ...]}}, where offset
and length are those of the stored form. Index files are read in name order and a later
one wins, so a chunk rewritten by a healing backup is read from its new copy.
"""

import json
import os
import secrets
import threading
import time
from array import array
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from .files import sync_directory, write_atomically
from .manifest import DIGEST

RECORD_HEADER = 36
DIGEST_BYTES = 32
# A few MB: one create and one fsync per this many bytes of small chunks, and a pack
# partly expired is small enough to rewrite.
PACK_TARGET_BYTES = 8 * 1024 * 1024
MAX_STORED = 2**32 - 1

# where: (pack id, offset of the stored form, its length)
Location = tuple[str, int, int]
# How ChunkIndex packs a location into one int: length, offset, then the pack's number.
_OFFSET_SHIFT = 32
_PACK_SHIFT = 72
_OFFSET_MASK = 2**40 - 1
_LENGTH_MASK = 2**32 - 1


class ChunkIndex(Mapping[str, Location]):
    """Where each packed chunk is, by name, compact: a raw digest mapped to one int that
    holds the pack's number, the offset and the length (a hex name and a tuple of three
    would take twice the memory, and every chunk of a repository is in here)."""

    def __init__(self) -> None:
        self._where: dict[bytes, int] = {}
        self._packs: list[str] = []
        self._numbers: dict[str, int] = {}

    def add(self, pack_id: str, rows: Iterable[tuple[str, int, int]]) -> None:
        """Records a pack's chunks; a chunk already recorded moves to this pack."""
        number = self._numbers.get(pack_id)
        if number is None:
            number = self._numbers[pack_id] = len(self._packs)
            self._packs.append(pack_id)
        base, where = number << _PACK_SHIFT, self._where
        for name, offset, length in rows:
            where[bytes.fromhex(name)] = base | offset << _OFFSET_SHIFT | length

    def _value(self, name: object) -> int | None:
        try:
            return self._where.get(bytes.fromhex(name))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return None

    def _location(self, value: int) -> Location:
        offset = (value >> _OFFSET_SHIFT) & _OFFSET_MASK
        return self._packs[value >> _PACK_SHIFT], offset, value & _LENGTH_MASK

    def __getitem__(self, name: str) -> Location:
        value = self._value(name)
        if value is None:
            raise KeyError(name)
        return self._location(value)

    def get(self, name: str, default: Any = None) -> Any:
        value = self._value(name)
        return default if value is None else self._location(value)

    def rows(self) -> Iterator[tuple[str, Location]]:
        """(name, location) of every chunk, without a lookup each (as `items()` does)."""
        location = self._location
        return ((digest.hex(), location(value)) for digest, value in self._where.items())

    def __contains__(self, name: object) -> bool:
        return self._value(name) is not None

    def __iter__(self) -> Iterator[str]:
        return (digest.hex() for digest in self._where)

    def __len__(self) -> int:
        return len(self._where)


def new_id() -> str:
    """Sortable by creation time, so a later index file wins over an earlier one."""
    return f"{time.time_ns():020d}-{secrets.token_hex(6)}"


def pack_path(packs: Path, pack_id: str) -> Path:
    return packs / pack_id[-2:] / pack_id


class _Rows:
    """One pack's chunks as they are appended: names beside typed arrays (a tuple and two
    ints a chunk would be six times the memory, for a tree of small files)."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.offsets = array("Q")
        self.lengths = array("L")

    def append(self, name: str, offset: int, length: int) -> None:
        self.names.append(name)
        self.offsets.append(offset)
        self.lengths.append(length)

    def listed(self) -> list[tuple[str, int, int]]:
        return list(zip(self.names, self.offsets, self.lengths, strict=True))


class PackWriter:
    """Appends chunks to the current pack, closing it at PACK_TARGET_BYTES; thread-safe."""

    def __init__(self, packs: Path, tmp: Path) -> None:
        self._packs = packs
        self._tmp = tmp
        self._lock = threading.Lock()
        self._file: Any = None
        self._id = ""
        self._size = 0
        self._chunks = _Rows()
        self._written: dict[str, _Rows] = {}
        self.fsyncs = 0

    @property
    def written(self) -> dict[str, list[tuple[str, int, int]]]:
        """The closed packs' chunks: (name, offset, length) by pack id."""
        with self._lock:
            return {pack_id: rows.listed() for pack_id, rows in self._written.items()}

    def forget(self) -> None:
        """Drops the record of the closed packs, once an index names them."""
        with self._lock:
            self._written = {}

    def add(self, name: str, stored: bytes) -> None:
        record = bytes.fromhex(name) + len(stored).to_bytes(4, "big")
        with self._lock:
            if self._file is None:
                self._id = new_id()
                self._file = open(self._tmp / f"pack-{self._id}", "wb")  # noqa: SIM115
                self._size = 0
                self._chunks = _Rows()
            self._file.write(record)
            self._file.write(stored)
            self._chunks.append(name, self._size + RECORD_HEADER, len(stored))
            self._size += RECORD_HEADER + len(stored)
            if self._size < PACK_TARGET_BYTES:
                return
            full, pack_id, chunks = self._file, self._id, self._chunks
            self._file = None
        self._close(full, pack_id, chunks)

    def _close(self, out: Any, pack_id: str, chunks: _Rows) -> None:
        out.flush()
        os.fsync(out.fileno())
        out.close()
        target = pack_path(self._packs, pack_id)
        target.parent.mkdir(mode=0o700, exist_ok=True)
        os.rename(self._tmp / f"pack-{pack_id}", target)
        self.fsyncs += 1
        with self._lock:
            self._written[pack_id] = chunks

    def finish(self) -> None:
        """Closes the pack being filled; afterwards `written` names every pack."""
        with self._lock:
            out, pack_id, chunks, self._file = self._file, self._id, self._chunks, None
        if out is not None:
            self._close(out, pack_id, chunks)
        for directory in {pack_path(self._packs, pack_id).parent for pack_id in self._written}:
            sync_directory(directory)

    def abort(self) -> None:
        with self._lock:
            out, self._file = self._file, None
        if out is not None:
            out.close()
            (self._tmp / f"pack-{self._id}").unlink(missing_ok=True)


def write_index(index: Path, tmp: Path, packs: dict[str, list[tuple[str, int, int]]]) -> str:
    """One durable index file naming these packs' chunks; returns its name."""
    name = f"{new_id()}.json"
    write_atomically(index / name, json.dumps({"packs": packs}), tmp)
    sync_directory(index)
    return name


def read_index(path: Path) -> dict[str, list[tuple[str, int, int]]]:
    """An index file's packs; ValueError when it is not one (checked field by field).

    The rows are the parsed JSON lists themselves, checked in place: a tuple made for
    each would be one more object per chunk while the whole file is in memory."""
    record = json.loads(path.read_bytes())
    packs = record.get("packs") if isinstance(record, dict) else None
    if not isinstance(packs, dict):
        raise ValueError("no packs")
    checked: dict[str, list[tuple[str, int, int]]] = {}
    for pack_id, chunks in packs.items():
        if not isinstance(chunks, list) or "/" in pack_id or not pack_id:
            raise ValueError(f"pack {pack_id[:40]!r} is malformed")
        for row in chunks:
            if not (isinstance(row, list) and len(row) == 3):
                raise ValueError("an index row is malformed")
            name, offset, length = row
            if not (isinstance(name, str) and DIGEST.fullmatch(name)):
                raise ValueError("a chunk name is malformed")
            if not (type(offset) is int and type(length) is int):
                raise ValueError("an offset is not an integer")
            if not (RECORD_HEADER <= offset < 2**40 and 0 < length <= MAX_STORED):
                raise ValueError(f"offset {offset} or length {length} is out of range")
        checked[pack_id] = chunks
    return checked


def records(path: Path) -> Iterator[tuple[str, int, bytes] | str]:
    """A pack's records as (chunk, offset, stored form); a string says where it stops
    making sense (a truncated or damaged record), after which nothing more is read."""
    with open(path, "rb") as stream:
        offset = 0
        while header := stream.read(RECORD_HEADER):
            if len(header) < RECORD_HEADER:
                yield f"truncated record header at offset {offset}"
                return
            length = int.from_bytes(header[DIGEST_BYTES:], "big")
            stored = stream.read(length)
            if len(stored) < length:
                yield f"truncated record at offset {offset}"
                return
            yield header[:DIGEST_BYTES].hex(), offset + RECORD_HEADER, stored
            offset += RECORD_HEADER + length
