"""A restore point's manifest: every file, directory and symlink it holds, with its chunks.

Stored as zstd-compressed JSON lines with a content checksum: first a header line (the
point's summary, so listing points decompresses only that line), then one line per entry
in path order. Paths are relative, '/'-separated, and keep names that are not UTF-8
(JSON escapes them as surrogates, which `os.fsencode` turns back into the same bytes).
Decoding checks every field's type and range, since a manifest is data read from disk,
not trusted: a crafted or damaged one is refused as damaged, never a traceback later.
"""

import dataclasses
import io
import json
import re
from collections.abc import Iterable, Iterator
from json.encoder import encode_basestring_ascii as _string
from typing import IO, Any

import zstandard

from .errors import DamagedData

FORMAT = 1
FILE, DIRECTORY, SYMLINK = "file", "dir", "symlink"
KINDS = (FILE, DIRECTORY, SYMLINK)
DIGEST = re.compile(r"[0-9a-f]{64}")
DIGESTS = re.compile(r"(?:[0-9a-f]{64})*")
POINT_ID = re.compile(r"[a-z][a-z0-9-]{0,62}")
# Ranges a value read from a manifest must lie in: what the protos, the kernel's
# uid_t/gid_t and a Timestamp (years 1 to 9999) can hold.
COUNT_MAX = 2**63 - 1
ID_MAX = 2**32 - 1
TIME_MIN_NS = -62_135_596_800 * 10**9
TIME_MAX_NS = 253_402_300_799 * 10**9
# Entry lines are parsed about this many characters at a time.
PARSE_BATCH_CHARS = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class Entry:
    """One thing in a restore point; `chunks` for files, `target` for symlinks."""

    path: str
    kind: str
    mode: int
    mtime_ns: int
    uid: int = 0
    gid: int = 0
    size: int = 0
    inode: int = 0
    chunks: tuple[str, ...] = ()
    target: str = ""


@dataclasses.dataclass(frozen=True)
class PointSummary:
    """What listing a restore point shows, read from the manifest's header line."""

    id: str
    policy_id: str
    job_id: str
    create_ns: int
    file_count: int
    total_bytes: int
    added_bytes: int
    sources: tuple[str, ...] = ()
    entry_count: int = 0
    computer: str = ""
    agent_id: str = ""


@dataclasses.dataclass(frozen=True)
class Manifest:
    summary: PointSummary
    entries: list[Entry] = dataclasses.field(default_factory=list)


def summarize(
    point_id: str,
    policy_id: str,
    job_id: str,
    create_ns: int,
    sources: Iterable[str],
    entries: list[Entry],
    added_bytes: int,
    computer: str = "",
    agent_id: str = "",
) -> Manifest:
    files = [entry for entry in entries if entry.kind == FILE]
    summary = PointSummary(
        id=point_id,
        policy_id=policy_id,
        job_id=job_id,
        create_ns=create_ns,
        file_count=len(files),
        total_bytes=sum(entry.size for entry in files),
        added_bytes=added_bytes,
        sources=tuple(sources),
        entry_count=len(entries),
        computer=computer,
        agent_id=agent_id,
    )
    return Manifest(summary, entries)


def entry_line(entry: Entry) -> str:
    """The entry's JSON line: what json.dumps of its fields gives, built with the C string
    encoder alone (a tree's worth of dumps calls is seconds)."""
    head = (
        f'{{"path": {_string(entry.path)}, "kind": "{entry.kind}", "mode": {entry.mode}, '
        f'"mtime_ns": {entry.mtime_ns}, "uid": {entry.uid}, "gid": {entry.gid}'
    )
    if entry.kind == FILE:
        names = ", ".join(f'"{name}"' for name in entry.chunks)
        return f'{head}, "size": {entry.size}, "inode": {entry.inode}, "chunks": [{names}]}}'
    if entry.kind == SYMLINK:
        return f'{head}, "target": {_string(entry.target)}}}'
    return head + "}"


def header_line(summary: PointSummary) -> bytes:
    header = json.dumps({"format": FORMAT, **dataclasses.asdict(summary)})
    # ASCII by construction: json.dumps escapes every non-ASCII character and surrogate.
    return header.encode("ascii") + b"\n"


def encode(manifest: Manifest) -> bytes:
    """The stored manifest, compressed line by line (a tree's lines never sit in memory
    all at once as text)."""
    compressor = zstandard.ZstdCompressor(write_checksum=True).compressobj()
    parts = [compressor.compress(header_line(manifest.summary))]
    batch: list[str] = []
    for entry in manifest.entries:
        batch.append(entry_line(entry))
        if len(batch) == 1024:
            parts.append(compressor.compress(("\n".join(batch) + "\n").encode("ascii")))
            batch = []
    if batch:
        parts.append(compressor.compress(("\n".join(batch) + "\n").encode("ascii")))
    parts.append(compressor.flush())
    return b"".join(parts)


def _lines(stream: IO[bytes]) -> io.TextIOWrapper:
    return io.TextIOWrapper(
        zstandard.ZstdDecompressor().stream_reader(stream), encoding="ascii", newline="\n"
    )


def read_summary(stream: IO[bytes], subject: str) -> PointSummary:
    """The header alone; raises DamagedData naming `subject` if it is not a manifest's."""
    try:
        return _summary(json.loads(_lines(stream).readline()))
    except (ValueError, KeyError, TypeError, zstandard.ZstdError) as error:
        raise DamagedData(subject, f"unreadable manifest header ({error})") from None


def check_frame(stream: IO[bytes], subject: str) -> None:
    """Decompresses the whole manifest against its checksum, parsing nothing (fast)."""
    try:
        with zstandard.ZstdDecompressor().stream_reader(stream) as reader:
            while reader.read(1024 * 1024):
                pass
    except zstandard.ZstdError as error:
        raise DamagedData(subject, f"unreadable manifest ({error})") from None


def read_manifest(stream: IO[bytes], subject: str) -> Manifest:
    """The whole manifest, checksum included; raises DamagedData naming `subject`."""
    summary, entries = read_entries(stream, subject)
    return Manifest(summary, list(entries))


def read_entries(stream: IO[bytes], subject: str) -> tuple[PointSummary, Iterator[Entry]]:
    """The header, and the entries as they are decompressed and parsed, in batches: a
    tree's worth of parsed JSON never sits in memory at once. The iterator raises
    DamagedData naming `subject`, at the end if the count or checksum is wrong."""
    try:
        lines = _lines(stream)
        summary = _summary(json.loads(lines.readline()))
    except (ValueError, KeyError, TypeError, zstandard.ZstdError) as error:
        raise DamagedData(subject, f"unreadable manifest ({error})") from None
    return summary, _entries(lines, summary, subject)


def _entries(lines: io.TextIOWrapper, summary: PointSummary, subject: str) -> Iterator[Entry]:
    count = 0
    try:
        while batch := lines.readlines(PARSE_BATCH_CHARS):
            # One parse per batch of lines (as one JSON array) instead of one per line: a
            # line never holds a raw newline, since JSON escapes it inside strings.
            records = json.loads(f"[{','.join(batch)}]")
            for record in records:
                count += 1
                yield _entry(record, count)
    except (ValueError, KeyError, TypeError, zstandard.ZstdError) as error:
        raise DamagedData(subject, f"unreadable manifest ({error})") from None
    if count != summary.entry_count:
        raise DamagedData(
            subject, f"manifest lists {count} entries, its header {summary.entry_count}"
        )


def _typed(record: dict[str, Any], key: str, kind: type, default: Any = None) -> Any:
    value = record.get(key, default)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"{key} is not a {kind.__name__}")
    return value


def _ranged(record: dict[str, Any], key: str, low: int, high: int, default: Any = None) -> int:
    value: int = _typed(record, key, int, default)
    if not low <= value <= high:
        raise ValueError(f"{key} {value} is out of range")
    return value


def _summary(header: Any) -> PointSummary:
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"not a format {FORMAT} manifest header")
    point_id = _typed(header, "id", str)
    if not POINT_ID.fullmatch(point_id):
        raise ValueError(f"restore point id {point_id[:80]!r} is malformed")
    sources = _typed(header, "sources", list, [])
    return PointSummary(
        id=point_id,
        policy_id=_typed(header, "policy_id", str),
        job_id=_typed(header, "job_id", str),
        create_ns=_ranged(header, "create_ns", 0, TIME_MAX_NS),
        file_count=_ranged(header, "file_count", 0, COUNT_MAX),
        total_bytes=_ranged(header, "total_bytes", 0, COUNT_MAX),
        added_bytes=_ranged(header, "added_bytes", 0, COUNT_MAX),
        sources=tuple(str(source) for source in sources),
        entry_count=_ranged(header, "entry_count", 0, COUNT_MAX),
        computer=_typed(header, "computer", str, ""),
        agent_id=_typed(header, "agent_id", str, ""),
    )


def _entry(record: Any, number: int) -> Entry:
    """One entry, checked; the common, valid case in one pass without per-field calls."""
    if type(record) is dict:
        get = record.get
        path, kind, mode, mtime_ns = get("path"), get("kind"), get("mode"), get("mtime_ns")
        uid, gid, size, inode = get("uid", 0), get("gid", 0), get("size", 0), get("inode", 0)
        names, target = get("chunks", []), get("target", "")
        if (
            type(path) is str
            and kind in KINDS
            and type(mode) is int
            and 0 <= mode <= 0o7777
            and type(mtime_ns) is int
            and TIME_MIN_NS <= mtime_ns <= TIME_MAX_NS
            and type(uid) is int
            and 0 <= uid <= ID_MAX
            and type(gid) is int
            and 0 <= gid <= ID_MAX
            and type(size) is int
            and 0 <= size <= COUNT_MAX
            and type(inode) is int
            and 0 <= inode < 2**64
            and type(target) is str
            and type(names) is list
            and _digests(names)
        ):
            return Entry(path, kind, mode, mtime_ns, uid, gid, size, inode, tuple(names), target)
    return _checked_entry(record, number)


def _digests(names: list[Any]) -> bool:
    """Whether every name is a SHA-256 in hex: one regex over them all."""
    try:
        joined = "".join(names)
    except TypeError:
        return False
    return len(joined) == 64 * len(names) and DIGESTS.fullmatch(joined) is not None


def _checked_entry(record: Any, number: int) -> Entry:
    """One entry, field by field, raising ValueError that names what is wrong."""
    if not isinstance(record, dict):
        raise ValueError(f"entry {number} is not an object")
    try:
        kind = _typed(record, "kind", str)
        if kind not in KINDS:
            raise ValueError(f"kind {kind[:20]!r} is unknown")
        chunks = tuple(_typed(record, "chunks", list, []))
        if not all(isinstance(chunk, str) and DIGEST.fullmatch(chunk) for chunk in chunks):
            raise ValueError("a chunk name is not a SHA-256")
        mode = _typed(record, "mode", int)
        if not 0 <= mode <= 0o7777:
            raise ValueError(f"mode {mode} is out of range")
        return Entry(
            path=_typed(record, "path", str),
            kind=kind,
            mode=mode,
            mtime_ns=_ranged(record, "mtime_ns", TIME_MIN_NS, TIME_MAX_NS),
            uid=_ranged(record, "uid", 0, ID_MAX, 0),
            gid=_ranged(record, "gid", 0, ID_MAX, 0),
            size=_ranged(record, "size", 0, COUNT_MAX, 0),
            inode=_ranged(record, "inode", 0, 2**64 - 1, 0),
            chunks=chunks,
            target=_typed(record, "target", str, ""),
        )
    except ValueError as error:
        raise ValueError(f"entry {number}: {error}") from None


def path_problem(path: str) -> str:
    """Why a manifest path could write outside a restore target; empty when it is safe."""
    if not path:
        return "is empty"
    if "\x00" in path:
        return "contains NUL"
    if path.startswith("/"):
        return "is absolute"
    parts = path.split("/")
    if ".." in parts:
        return "contains '..'"
    if any(part in ("", ".") for part in parts):
        return "has an empty or '.' component"
    return ""
