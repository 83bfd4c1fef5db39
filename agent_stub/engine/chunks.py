"""Cutting file data into chunks, naming them, and packing each for storage.

Cut points are content-defined (FastCDC 2020, from pyfastcdc), so an insertion near the
start of a file moves only the chunks it touches and the rest still deduplicate. A chunk
is named by the SHA-256 of its bytes and stored behind a one-byte header saying whether
zstd compression paid for itself on it.
"""

import hashlib
import threading
from typing import Any

import zstandard
from pyfastcdc import FastCDC

KIB = 1024
# Large chunks keep the per-chunk cost (a file, an fsync, a manifest line) small next to
# the data; restic settled on the same order of size.
CHUNKER_SETTINGS: dict[str, Any] = {
    "algorithm": "fastcdc-2020",
    "min_size": 256 * KIB,
    "avg_size": 1024 * KIB,
    "max_size": 4096 * KIB,
}
RAW = b"\x00"
ZSTD = b"\x01"
# Level 1: on source code it compresses about 30% faster than the default level 3 for
# output about 9% larger, and a backup should load the computer as little as it can.
ZSTD_LEVEL = 1
# Compressed form is kept only when it saves at least 1/32 of the chunk: below that the
# decompression on every restore costs more than the space is worth.
PAYS_FRACTION = 1 / 32

_local = threading.local()


def chunker(settings: dict[str, Any]) -> FastCDC:
    """A chunker with a repository's settings (they must never change for a repository)."""
    if settings.get("algorithm") != CHUNKER_SETTINGS["algorithm"]:
        raise ValueError(f"unknown chunking algorithm {settings.get('algorithm')!r}")
    return FastCDC(
        int(settings["avg_size"]),
        min_size=int(settings["min_size"]),
        max_size=int(settings["max_size"]),
    )


def digest(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def _compressor() -> zstandard.ZstdCompressor:
    # Compressor contexts are not thread-safe; one per writer thread is reused.
    compressor: zstandard.ZstdCompressor | None = getattr(_local, "compressor", None)
    if compressor is None:
        compressor = _local.compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    return compressor


def pack(data: bytes) -> bytes:
    """The stored form of a chunk: compressed when that pays, raw otherwise."""
    compressed = _compressor().compress(data)
    if len(compressed) <= len(data) * (1 - PAYS_FRACTION):
        return ZSTD + compressed
    return RAW + data


def _decompressor() -> zstandard.ZstdDecompressor:
    decompressor: zstandard.ZstdDecompressor | None = getattr(_local, "decompressor", None)
    if decompressor is None:
        decompressor = _local.decompressor = zstandard.ZstdDecompressor()
    return decompressor


def unpack(stored: bytes | memoryview) -> bytes | memoryview:
    """The chunk's bytes from its stored form (a view of `stored` when it is raw);
    ValueError if the form is not one of ours."""
    kind, payload = bytes(stored[:1]), stored[1:]
    if kind == RAW:
        return payload
    if kind == ZSTD:
        try:
            return _decompressor().decompress(payload)
        except zstandard.ZstdError as error:
            raise ValueError(f"cannot decompress: {error}") from None
    raise ValueError(f"unknown storage header {kind!r}")
