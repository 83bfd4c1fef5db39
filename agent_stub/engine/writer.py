"""Writing a backup's new chunks: compressed and stored on a thread pool, beside reading.

Large chunks become files of their own, written under tmp/ and made durable together by
one syncfs before they are moved into place; small ones are handed over in batches and
appended to pack files, so a tree of many small files costs a few creates and fsyncs per
pack instead of one per chunk, and little Python work per chunk. zstd and the writes run
outside the GIL, so the pool uses the cores the reading thread leaves free.
"""

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from . import chunks
from .chunkstore import PACK_BELOW
from .job import Progress
from .packs import PackWriter, write_index
from .repository import Repository

WRITER_THREADS = 3
# Small chunks go to the pool this many bytes (or chunks) at a time.
BATCH_BYTES = 1024 * 1024
BATCH_CHUNKS = 512
# Work handed to the pool and not yet done: bounds memory to about this many bytes.
BYTES_IN_FLIGHT = 16 * 1024 * 1024


class ChunkWriter:
    """Stores the chunks the repository lacks; `finish` makes them durable and indexed."""

    def __init__(self, repository: Repository, progress: Progress) -> None:
        self._repository = repository
        self._progress = progress
        self._pool = ThreadPoolExecutor(WRITER_THREADS, thread_name_prefix="chunk-writer")
        self._packs = PackWriter(repository.packs, repository.tmp)
        self._queued: deque[tuple[list[str], int, Future[int]]] = deque()
        self._in_flight = 0
        self._batch: list[tuple[str, bytes]] = []
        self._batch_bytes = 0
        self._seen: set[str] = set()
        self._staged: list[tuple[str, Path, int]] = []
        self.flushes = 0
        # Chunks known damaged or missing that this backup wrote again from the source.
        self.healed: list[str] = []
        # The chunk files of their own this job wrote, for its clean-up if it fails.
        self.written: list[str] = []

    def store(self, name: str, data: memoryview) -> None:
        if name in self._seen:
            return
        size = len(data)
        if self._repository.has_chunk(name, size):
            return
        self._seen.add(name)
        if name in self._repository.damaged_chunks:
            self.healed.append(name)
        if size >= PACK_BELOW:
            self._submit([name], size, self._pool.submit(self._put_loose, name, bytes(data)))
            return
        self._batch.append((name, bytes(data)))
        self._batch_bytes += size
        if self._batch_bytes >= BATCH_BYTES or len(self._batch) >= BATCH_CHUNKS:
            self._flush_batch()

    def _flush_batch(self) -> None:
        if self._batch:
            batch, size = self._batch, self._batch_bytes
            self._batch, self._batch_bytes = [], 0
            # Not named in `written`: a pack no index names is collected whole.
            self._submit([], size, self._pool.submit(self._put_packed, batch))

    def _put_loose(self, name: str, data: bytes) -> int:
        staged = self._repository.stage_chunk(name, data)
        self._staged.append(staged)  # list.append is atomic: no lock for the pool
        return staged[2]

    def _put_packed(self, batch: list[tuple[str, bytes]]) -> int:
        written = 0
        for name, data in batch:
            stored = chunks.pack(data)
            self._packs.add(name, stored)
            written += len(stored)
        return written

    def _submit(self, names: list[str], size: int, future: Future[int]) -> None:
        self._queued.append((names, size, future))
        self._in_flight += size
        self._harvest(wait=self._in_flight >= BYTES_IN_FLIGHT)

    def _harvest(self, wait: bool) -> None:
        while self._queued and (wait or self._queued[0][2].done()):
            names, size, future = self._queued.popleft()
            self._progress.bytes_written += future.result()  # a failed write raises here
            self._in_flight -= size
            self.written.extend(names)
            wait = self._in_flight >= BYTES_IN_FLIGHT

    def finish(self) -> None:
        """Everything written, fsynced, and the packs named in a durable index file."""
        self._flush_batch()
        while self._queued:
            self._harvest(wait=True)
        self._pool.shutdown()
        self._packs.finish()
        written = self._packs.written
        if written:
            write_index(self._repository.index, self._repository.tmp, written)
            # Read again when next needed: a tree's worth of locations need not stay in
            # memory for the rest of the job, which never looks at them.
            self._repository.forget_locations()
        del written
        self._packs.forget()
        self._seen = set()
        self.flushes = self._packs.fsyncs + self._repository.place_chunks(self._staged)
        self._staged = []

    def abort(self) -> None:
        """Drops what is queued and waits for writes under way; keeps count of them."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        for names, _, future in self._queued:
            if not future.cancelled() and future.exception() is None:
                self.written.extend(names)
        self._queued.clear()
        self._packs.abort()
        for _, path, _ in self._staged:
            path.unlink(missing_ok=True)
        self._staged = []
