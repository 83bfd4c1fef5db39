"""Values read from a manifest are range-checked: a bad one is damage, never a traceback."""

import json
from pathlib import Path
from typing import Any

import grpc
import pytest
import zstandard
from engine_support import back_up, cli, policy, write

from agent_stub import engine
from agent_stub.store import AgentStore
from backup.v1 import agent_control_pb2 as api
from backup.v1.agent_control_pb2_grpc import AgentControlStub


def rewrite(repository: Path, point_id: str, header: dict[str, Any], entry: dict[str, Any]) -> None:
    """Changes fields of the point's header and of its entries, as a crafted file could."""
    path = repository / "points" / f"{point_id}.jsonl.zst"
    stored = zstandard.ZstdDecompressor().decompressobj().decompress(path.read_bytes())
    lines = stored.decode().splitlines()
    records = [json.loads(line) for line in lines]
    records[0].update(header)
    for record in records[1:]:
        if record["kind"] == "file":
            record.update(entry)
    text = "\n".join(json.dumps(record) for record in records) + "\n"
    path.write_bytes(zstandard.ZstdCompressor(write_checksum=True).compress(text.encode()))


@pytest.mark.parametrize(
    "header",
    [{"create_ns": 2**70}, {"create_ns": -1}, {"file_count": -5}, {"total_bytes": 2**64}],
)
async def test_an_out_of_range_header_hides_no_other_point(
    start_agent, tmp_path: Path, header: dict[str, Any]
) -> None:
    """ListRestorePoints skips the bad point and lists the good one; verify names it."""
    agent = await start_agent("pc-1")
    source = write(tmp_path / "source" / "file", b"data").parent
    backup_policy = policy(source, tmp_path / "repository")
    AgentStore(agent.config.data_dir).save_policy(backup_policy)
    bad, _ = back_up(backup_policy)
    good, _ = back_up(backup_policy)
    rewrite(tmp_path / "repository", bad, header, {})
    async with grpc.aio.insecure_channel(agent.address) as channel:
        reply = await AgentControlStub(channel).ListRestorePoints(
            api.ListRestorePointsRequest(), timeout=5
        )
    assert [point.id for point in reply.restore_points] == [good]
    done = cli("verify", "--data-dir", str(agent.config.data_dir))
    assert done.returncode == 3
    assert f"damaged: restore point {bad}" in done.stdout and "out of range" in done.stdout


@pytest.mark.parametrize(
    "entry", [{"uid": 2**40}, {"gid": -1}, {"size": 2**63}, {"mtime_ns": 10**30}]
)
def test_an_out_of_range_entry_is_refused_as_damage(tmp_path: Path, entry: dict[str, Any]) -> None:
    """restore of a point whose entry is out of range exits 1 with one line naming it."""
    source = write(tmp_path / "source" / "file", b"data").parent
    backup_policy = policy(source, tmp_path / "repository")
    AgentStore(tmp_path / "agent").save_policy(backup_policy)
    point_id, _ = back_up(backup_policy)
    rewrite(tmp_path / "repository", point_id, {}, entry)
    with pytest.raises(engine.DamagedData, match="out of range"):
        engine.Repository.open(tmp_path / "repository").read_point(point_id)
    target = str(tmp_path / "restored")
    done = cli("restore", point_id, "--to", target, "--data-dir", str(tmp_path / "agent"))
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "out of range" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
