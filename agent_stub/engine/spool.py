"""The entries of the restore point being written, compressed as the backup makes them.

A manifest's header (its counts) comes first but is known only at the end, and a tree's
entries as Python objects cost about half a kilobyte per file. So each entry becomes its
manifest line at once, compressed into a spool a tenth of that size, and the chunks it
names are kept as raw 32-byte digests for the point's chunk list; `encode` then writes
the manifest (header, then the spooled lines) exactly as manifest.encode would.
"""

from collections.abc import Iterable

import zstandard

from .manifest import FILE, Entry, PointSummary, entry_line, header_line

# Lines are compressed this many at a time.
BATCH_LINES = 1024
# Spooled lines are read back this many bytes at a time.
READ_BYTES = 1024 * 1024


class Spool:
    """Entries added in manifest order; counts kept for the header."""

    def __init__(self) -> None:
        self._compressor = zstandard.ZstdCompressor(level=1).compressobj()
        self._parts: list[bytes] = []
        self._batch: list[str] = []
        self._digests = bytearray()
        self.entry_count = 0
        self.file_count = 0
        self.total_bytes = 0

    def add(self, entry: Entry) -> None:
        self.entry_count += 1
        if entry.kind == FILE:
            self.file_count += 1
            self.total_bytes += entry.size
            if entry.chunks:
                self._digests += bytes.fromhex("".join(entry.chunks))
        self._batch.append(entry_line(entry))
        if len(self._batch) == BATCH_LINES:
            self._flush()

    def _flush(self) -> None:
        if self._batch:
            text = "\n".join(self._batch) + "\n"
            self._parts.append(self._compressor.compress(text.encode("ascii")))
            self._batch = []

    def extend(self, entries: Iterable[Entry]) -> None:
        for entry in entries:
            self.add(entry)

    def chunk_digests(self) -> list[bytes]:
        """Every chunk the entries name, once each, as sorted raw digests."""
        view = self._digests
        return sorted({bytes(view[at : at + 32]) for at in range(0, len(view), 32)})

    def encode(self, summary: PointSummary) -> bytes:
        """The stored manifest: one zstd frame with a checksum, header line first."""
        self._flush()
        self._parts.append(self._compressor.flush())
        spooled, self._parts = b"".join(self._parts), []
        compressor = zstandard.ZstdCompressor(write_checksum=True).compressobj()
        out = [compressor.compress(header_line(summary))]
        reader = zstandard.ZstdDecompressor().decompressobj()
        for at in range(0, len(spooled), READ_BYTES):
            out.append(compressor.compress(reader.decompress(spooled[at : at + READ_BYTES])))
        out.append(compressor.flush())
        return b"".join(out)
