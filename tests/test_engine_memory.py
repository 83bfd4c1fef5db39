"""The engine's compact forms (scan rows, spooled entries, chunk index) hold what the
objects they replaced held, at a fraction of the memory per file."""

import io
import os
import tracemalloc
from pathlib import Path

from engine_support import NOT_UTF8, back_up, make_tree, policy, restored_source, snapshot, write

from agent_stub import engine
from agent_stub.engine import chunks, packs
from agent_stub.engine.manifest import (
    FILE,
    TIME_MAX_NS,
    Entry,
    encode,
    read_manifest,
    summarize,
)
from agent_stub.engine.scan import scan
from agent_stub.engine.spool import Spool
from agent_stub.jobs import RunningJob
from backup.v1 import resources_pb2 as pb

FILES = 3000


def _job() -> RunningJob:
    return RunningJob(pb.Job(id="j-scan", policy_id="p"))


def test_a_scan_costs_little_memory_per_file(tmp_path: Path) -> None:
    """3,000 files scanned take under 300 bytes each (a Found and its Entry took ~1 KB)."""
    for index in range(FILES):
        write(tmp_path / "tree" / f"d{index // 500}" / f"file-{index:05d}.txt", b"x")
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        sources = scan([str(tmp_path / "tree")], job := _job())
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    found = list(sources.found)
    sources.close()
    files = [item for item in found if item.entry.kind == FILE]
    assert not job.snapshot().warnings
    assert len(files) == FILES and held / FILES < 300, held / FILES
    first = files[0]
    assert first.source == str(tmp_path / "tree" / "d0" / "file-00000.txt")
    assert first.entry.path == first.source.lstrip("/") and first.parts == ("d0", "file-00000.txt")
    assert (first.inode, first.device) == (
        os.stat(first.source).st_ino,
        os.stat(first.source).st_dev,
    )


def test_the_spool_writes_the_manifest_encode_writes(tmp_path: Path) -> None:
    """Every kind of entry, a name that is not UTF-8 among them, reads back identically."""
    make_tree(tmp_path / "tree")
    sources = scan([str(tmp_path / "tree")], _job())
    entries = [
        Entry(**{**item.entry.__dict__, "chunks": (chunks.digest(os.fsencode(item.source)),) * 2})
        if item.entry.kind == FILE
        else item.entry
        for item in sources.found
    ]
    sources.close()
    assert any(NOT_UTF8 in entry.path for entry in entries)
    expected = summarize("rp-spooled", "p", "j", 5, ["/t"], entries, 7)
    spool = Spool()
    spool.extend(entries)
    assert (spool.entry_count, spool.file_count) == (
        expected.summary.entry_count,
        expected.summary.file_count,
    )
    assert spool.total_bytes == expected.summary.total_bytes
    spooled = read_manifest(io.BytesIO(spool.encode(expected.summary)), "spooled")
    assert spooled == read_manifest(io.BytesIO(encode(expected)), "encoded") == expected
    names = sorted({name for entry in entries for name in entry.chunks})
    assert spool.chunk_digests() == [bytes.fromhex(name) for name in names]


def test_the_chunk_index_answers_as_a_dict_did() -> None:
    """Lookups, a later pack winning, iteration by hex name, and names it never held."""
    index = packs.ChunkIndex()
    first, second = chunks.digest(b"one"), chunks.digest(b"two")
    index.add("pack-a", [(first, 36, 100), (second, 172, 2**32 - 1)])
    index.add("pack-b", [(first, 2**40 - 1, 1)])
    assert index[first] == ("pack-b", 2**40 - 1, 1)
    assert index.get(second) == ("pack-a", 172, 2**32 - 1)
    assert sorted(index) == sorted([first, second]) and len(index) == 2
    assert list(index.rows()) == list(index.items())
    assert "z" * 64 not in index and index.get("short") is None and 5 not in index
    assert dict(index.items()) == {
        first: ("pack-b", 2**40 - 1, 1),
        second: ("pack-a", 172, 2**32 - 1),
    }


def test_an_index_naming_a_chunk_in_no_hex_is_an_index_problem(tmp_path: Path) -> None:
    """A crafted index row is reported for repair, never a traceback, and hides nothing."""
    source = write(tmp_path / "source" / "a", b"alpha\n").parent
    point_id, _ = back_up(policy(source, tmp_path / "repository"))
    (tmp_path / "repository" / "index" / "99999999999999999999-bad.json").write_text(
        '{"packs": {"p": [["' + "Z" * 64 + '", 36, 5]]}}'
    )
    repository = engine.Repository.open(tmp_path / "repository")
    assert any("malformed" in problem for problem in repository.index_problems_now())
    assert point_id in [point.id for point in repository.summaries()[0]]


def test_a_previous_point_with_an_mtime_past_int64_means_reading_the_file(tmp_path: Path) -> None:
    """A base point whose file time no kernel gives is no reason to fail: the file is read."""
    source = write(tmp_path / "source" / "a", b"alpha\n").parent
    repository = engine.Repository.create(tmp_path / "repository")
    data = b"stale\n"
    repository.put_chunk(chunks.digest(data), data)
    far = Entry(
        str(source / "a").lstrip("/"),
        FILE,
        0o644,
        TIME_MAX_NS,
        size=6,
        chunks=(chunks.digest(data),),
    )
    repository.commit_point(summarize("rp-far", "nightly", "j-0", 1, [str(source)], [far], 0))
    point_id, job = back_up(policy(source, tmp_path / "repository"))
    assert job.bytes_read == 6 and list(job.warnings) == []
    engine.restore(engine.Repository.open(tmp_path / "repository"), point_id, tmp_path / "out")
    assert snapshot(restored_source(tmp_path / "out", source)) == snapshot(source)
