"""A backup job: a new restore point from a policy's sources, incremental forever.

A file whose size, mtime and inode match the policy's previous restore point is not read
again: its chunk list is carried over. Any other file is read once and cut into chunks,
and only chunks the repository lacks are written, on a small thread pool so compressing
and writing overlap with reading and hashing. The manifest is committed last (see
repository.py), then the policy's old points expire and unreferenced chunks are collected
(see retention.py). A job that fails removes the chunks it wrote, when it can take the
repository lock alone; otherwise, and after a stop, the next collection removes them.
"""

import logging
import os
import stat
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pyfastcdc import FastCDC

from backup.ids import new_point_id
from backup.paths import is_within

from . import chunks, lock, retention
from .control import JobControl, Throttle, check, wait_a_little
from .errors import BackupFailed, DamagedData, JobCancelled, RepositoryError
from .job import BackupJob, Progress
from .manifest import FILE, Entry, PointSummary, read_entries
from .repository import Repository
from .scan import Found, Sources, scan
from .spool import Spool
from .writer import ChunkWriter

log = logging.getLogger("agent_stub.engine")

# What an incremental backup keeps of a previous file, as one bytes object: its size,
# mtime and inode packed as below, then its chunks' raw digests (a tuple of ints and hex
# names would cost three times the memory, for every file of the tree).
_Previous = bytes
_UNCHANGED = struct.Struct("<QqQ")

# Files up to the largest chunk size are read whole and cut in memory.
SMALL_FILE_BYTES = chunks.CHUNKER_SETTINGS["max_size"]


class _Unreadable(Exception):
    """A source file could not be opened or read: it is skipped, with a warning."""

    def __init__(self, error: OSError) -> None:
        super().__init__(error.strerror)
        self.error = error


class _SourceReader:
    """A source file as the chunker reads it: checks for a stop and keeps the read limit."""

    def __init__(self, fd: int, job: JobControl, throttle: Throttle, progress: Progress) -> None:
        # The descriptor itself, read with readv: a file object per small file costs
        # more than its read.
        self._fd = fd
        self._job = job
        self._throttle = throttle
        self._progress = progress
        self.bytes_read = 0

    def readinto(self, buffer: memoryview) -> int:
        check(self._job)
        try:
            count = os.readv(self._fd, [buffer[: self._throttle.read_bytes]])
        except OSError as error:
            raise _Unreadable(error) from None
        self.bytes_read += count
        self._progress.read(count)
        self._progress.report(self._job)
        self._throttle.account(count)
        return count

    def close(self) -> None:
        os.close(self._fd)


class _Prefixed:
    """Bytes already read, then the rest of the reader."""

    def __init__(self, prefix: memoryview, reader: _SourceReader) -> None:
        self._prefix = prefix
        self._reader = reader

    def readinto(self, buffer: memoryview) -> int:
        if not self._prefix:
            return self._reader.readinto(buffer)
        count = min(len(buffer), len(self._prefix))
        buffer[:count] = self._prefix[:count]
        self._prefix = self._prefix[count:]
        return count


class _Backup:
    def __init__(self, spec: BackupJob, job_id: str, job: JobControl) -> None:
        self.spec = spec
        self.job_id = job_id
        self.job = job
        self.sources = Sources()
        self.repository = Repository.create(spec.repository, spec.repository_ids, spec.agent_id)
        self.chunker: FastCDC = chunks.chunker(self.repository.chunker_settings)
        self.progress = Progress()
        self.writer = ChunkWriter(self.repository, self.progress)
        self.lock: Any = None
        self.throttle = Throttle(spec.throttle_bytes_per_second, job)

    def run(self) -> PointSummary:
        previous = self._previous_files()
        self.sources = scan(
            list(self.spec.sources), self.job, self.spec.allowed_roots, self.spec.exclude_patterns
        )
        self.progress.bytes_total = self.sources.found.total_bytes
        self.progress.report(self.job, now=True)
        # Each entry goes into the spool as it is made: the new point's entries are never
        # Python objects for the whole tree at once.
        spool = Spool()
        try:
            for item in self.sources.found:
                check(self.job)
                if item.entry.kind != FILE:
                    spool.add(item.entry)
                    continue
                entry = self._file(item, previous.pop(item.entry.path, None))
                if entry is not None:
                    spool.add(entry)
                self.progress.report(self.job)
        finally:
            self.sources.close()
        previous.clear()
        self.writer.finish()
        self.progress.report(self.job, now=True)
        summary = PointSummary(
            id=new_point_id(),
            policy_id=self.spec.policy_id,
            job_id=self.job_id,
            create_ns=time.time_ns(),
            file_count=spool.file_count,
            total_bytes=spool.total_bytes,
            added_bytes=self.progress.bytes_written,
            sources=tuple(self.spec.sources),
            entry_count=spool.entry_count,
            computer=self.spec.computer,
            agent_id=self.spec.agent_id,
        )
        check(self.job)
        if self.lock is not None:
            self.lock.still_held()
        self.repository.commit_encoded(summary.id, spool.encode(summary), spool.chunk_digests())
        self._healed()
        return summary

    def _healed(self) -> None:
        """Clears the damage records of chunks this job wrote again, and says so."""
        for name in self.writer.healed:
            self.repository.mark_healed(name)
        if self.writer.healed:
            self.job.warn(
                f"healed {len(self.writer.healed)} damaged or missing chunks by writing them "
                f"again from the source, such as {self.writer.healed[0]}"
            )

    def _previous_files(self) -> dict[str, _Previous]:
        """The files of the policy's newest restore point, by path, to skip unchanged ones:
        only what that takes, read in batches (see manifest.read_entries)."""
        summaries, _ = self.repository.summaries()
        mine = [point for point in summaries if self.owns(point)]
        if not mine:
            return {}
        subject = f"restore point {mine[0].id}"
        files: dict[str, _Previous] = {}
        try:
            with open(self.repository.manifest_path(mine[0].id), "rb") as stream:
                summary, entries = read_entries(stream, subject)
                if summary.id != mine[0].id:
                    raise DamagedData(subject, f"its manifest names {summary.id!r}")
                for entry in entries:
                    if entry.kind == FILE:
                        try:
                            key = _UNCHANGED.pack(entry.size, entry.mtime_ns, entry.inode)
                        except struct.error:
                            continue  # an mtime no file here can have: read it again
                        files[entry.path] = key + bytes.fromhex("".join(entry.chunks))
        except (DamagedData, RepositoryError, OSError) as error:
            self.job.warn(f"previous restore point unusable, reading every file: {error}")
            return {}
        return files

    def owns(self, point: PointSummary) -> bool:
        """A point of this policy written by this computer: the base of the next one."""
        return point.policy_id == self.spec.policy_id and point.agent_id == self.spec.agent_id

    def _intact(self, names: tuple[str, ...]) -> bool:
        """Whether every chunk of the unchanged file is stored and not known damaged. If
        not, the file is read again, which heals the chunk from the source (and a chunk
        gone without verify having seen it counts as healed, too)."""
        located, bad = self.repository.locations, self.repository.damaged_chunks
        missing = [
            name
            for name in names
            if name in bad or (name not in located and not self.repository.has_chunk(name))
        ]
        self.repository.damaged_chunks.update(missing)
        return not missing

    def _file(self, item: Found, previous: _Previous | None) -> Entry | None:
        entry = item.entry
        unchanged = _UNCHANGED.pack(entry.size, entry.mtime_ns, entry.inode)
        if previous is not None and previous.startswith(unchanged):
            start = _UNCHANGED.size
            names = tuple(previous[at : at + 32].hex() for at in range(start, len(previous), 32))
            if self._intact(names):
                self.progress.file_finished(entry.size)
                return Entry(
                    entry.path,
                    FILE,
                    entry.mode,
                    entry.mtime_ns,
                    entry.uid,
                    entry.gid,
                    entry.size,
                    entry.inode,
                    names,
                )
        try:
            read = self._read(item)
        except _Unreadable as unreadable:
            self.job.warn(f"skipped {item.source}: {unreadable.error.strerror}")
            self.progress.file_finished(entry.size, stored=False)
            return None
        self.progress.file_finished(entry.size)
        return read

    def _read(self, item: Found) -> Entry:
        try:
            fd, info = self.sources.open_file(item)
        except OSError as error:
            raise _Unreadable(error) from None
        reader = _SourceReader(fd, self.job, self.throttle, self.progress)
        try:
            if not stat.S_ISREG(info.st_mode):
                raise _Unreadable(OSError(0, "no longer a regular file"))
            names = []
            for data in self._cut(reader, info.st_size):
                name = chunks.digest(data)
                self.writer.store(name, data)
                names.append(name)
        finally:
            reader.close()
        # Metadata from before the read: a file changed while read is read again next time.
        return Entry(
            item.entry.path,
            FILE,
            stat.S_IMODE(info.st_mode),
            info.st_mtime_ns,
            info.st_uid,
            info.st_gid,
            reader.bytes_read,
            info.st_ino,
            tuple(names),
        )

    def _cut(self, reader: _SourceReader, size: int) -> Iterator[memoryview]:
        """The file's chunks. A small file is read whole and cut in memory: the streaming
        chunker's buffer of twice the largest chunk costs more than such a file. One no
        larger than the smallest chunk is one chunk: the chunker need not see it."""
        if size > SMALL_FILE_BYTES:
            yield from (chunk.data for chunk in self.chunker.cut_stream(reader))
            return
        buffer = memoryview(bytearray(size + 1))
        filled = 0
        while filled < len(buffer) and (count := reader.readinto(buffer[filled:])):
            filled += count
        if filled <= size:
            if 0 < filled <= self.chunker.min_size:
                yield buffer[:filled]
            else:
                yield from (chunk.data for chunk in self.chunker.cut_buf(buffer[:filled]))
        else:  # it grew while being read: go on streaming after what was read
            stream = self.chunker.cut_stream(_Prefixed(buffer[:filled], reader))
            yield from (chunk.data for chunk in stream)

    def clean_up(self, stopped: bool) -> None:
        """After a stop or failure: removes the chunks this job wrote, if it can do so now.

        Not after a stop: finding which chunks no manifest names means reading every
        manifest, and a stop must take effect at once. The next collection takes them.
        """
        self.writer.abort()
        if stopped:
            return
        try:
            retention.collect(self.repository, self.writer.written, self.spec.agent_id)
        except (OSError, RepositoryError) as error:
            log.warning("could not remove the chunks of an unfinished job: %s", error)


def _describe(error: OSError) -> str:
    where = f": {error.filename}" if error.filename else ""
    return f"{error.strerror or error}{where}"


def run_backup(spec: BackupJob, job_id: str, job: JobControl) -> str:
    """Backs the policy's sources up into a new restore point; returns its id.

    With `spec.allowed_roots` (the agent's --allow-path, resolved), what is opened must lie
    inside them now, not only when the policy was received: sources are checked as the
    scan opens them, the repository here, as the job starts.
    """
    for source in spec.sources:
        if not os.path.exists(source):
            raise BackupFailed(f"source path {source} does not exist")
    repository = os.path.realpath(spec.repository)
    if spec.allowed_roots and not any(is_within(repository, root) for root in spec.allowed_roots):
        raise BackupFailed(
            f"the repository {spec.repository} resolves to {repository}, outside the paths "
            "this agent allows"
        )
    try:
        backup = _Backup(spec, job_id, job)
    except RepositoryError as error:
        raise BackupFailed(str(error)) from None
    except OSError as error:
        raise BackupFailed(f"cannot open the repository: {_describe(error)}") from None
    except ValueError as error:  # chunker settings in the config that this agent cannot use
        raise BackupFailed(f"repository {spec.repository}: {error}") from None
    try:
        with lock.shared(
            backup.repository.root, pause=lambda: wait_a_little(job), agent_id=spec.agent_id
        ) as held:
            backup.lock = held
            backup.repository.reload_index()
            manifest = backup.run()
            _expire(backup.repository, spec, job)
    except BaseException as error:
        backup.clean_up(stopped=isinstance(error, JobCancelled))
        if isinstance(error, OSError):
            # Source files that cannot be read are skipped, so this is the repository's.
            raise BackupFailed(
                f"cannot write to the repository {spec.repository}: {_describe(error)}"
            ) from error
        if isinstance(error, RepositoryError):
            raise BackupFailed(str(error)) from error
        raise
    _collect(backup.repository, job, spec.agent_id)
    return manifest.id


def _expire(repository: Repository, spec: BackupJob, job: JobControl) -> None:
    """Retention after a committed point: a failure here is a warning, not a lost point."""
    keep = retention.points_to_keep(spec.retention_points)
    try:
        expired = retention.expire(repository, spec.policy_id, keep, spec.agent_id)
    except OSError as error:
        job.warn(f"old restore points not expired: {_describe(error)}")
        return
    if expired:
        log.info("policy %s: restore points %s expired", spec.policy_id, ", ".join(expired))


def _collect(repository: Repository, job: JobControl, agent_id: str) -> None:
    """Collection after a committed point; like retention, a failure here is a warning."""
    try:
        collection = retention.collect(repository, agent_id=agent_id)
    except DamagedData as error:
        job.warn(f"unreferenced chunks not collected: {error}; run verify")
    except OSError as error:
        job.warn(f"unreferenced chunks not collected: {_describe(error)}")
    else:
        if collection is not None and collection.chunks_removed:
            log.info(
                "collected %d unreferenced chunks (%d bytes) in %s",
                collection.chunks_removed,
                collection.bytes_freed,
                repository.root,
            )


def remove_stale_staging(repository: Path) -> None:
    """Removes what killed jobs left under `<repository>/tmp/`, unless a job is writing."""
    try:
        retention.clear_stale_staging(Repository.open(repository))
    except (OSError, RepositoryError) as error:
        log.info("no staging to clear in %s: %s", repository, error)
