"""Who this agent is, and which repositories it has written, kept in its data dir.

    <data dir>/agent-id                   a random id made once: the owner of its points
    <data dir>/repositories/<policy>.json every repository the policy's jobs wrote, with its id

The id tells this computer's restore points from another's in a shared repository, where
names can repeat and change. The remembered repositories let a job refuse a repository
that went missing (an unmounted share) instead of starting a new one, and keep the points
of a policy's earlier repositories listed, restorable and verified after it moved.
"""

import json
import secrets
from dataclasses import dataclass
from pathlib import Path

from .engine.files import create_once, write_atomically

AGENT_ID = "agent-id"
REPOSITORIES = "repositories"


@dataclass(frozen=True)
class Known:
    """A repository a policy's job wrote, and the id it had."""

    policy_id: str
    path: str
    id: str


def agent_id(data_dir: Path, create: bool = False) -> str:
    """This data dir's agent id; "" before its first job (unless `create`)."""
    path = data_dir / AGENT_ID
    if create and not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        create_once(path, f"a-{secrets.token_hex(8)}\n".encode(), data_dir)
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""


def known(data_dir: Path, policy_id: str = "") -> list[Known]:
    """The repositories remembered for one policy (or for all)."""
    folder = data_dir / REPOSITORIES
    paths = [folder / f"{policy_id}.json"] if policy_id else sorted(folder.glob("*.json"))
    found = []
    for path in paths:
        try:
            rows = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            continue
        for row in rows if isinstance(rows, list) else []:
            if isinstance(row, dict) and isinstance(row.get("path"), str):
                found.append(Known(path.stem, row["path"], str(row.get("id", ""))))
    return found


def expected_ids(data_dir: Path, policy_id: str, repository: str) -> tuple[str, ...]:
    return tuple(k.id for k in known(data_dir, policy_id) if k.path == repository and k.id)


def remember(data_dir: Path, policy_id: str, repository: str, repository_id: str) -> None:
    """Adds the repository to the policy's list, once per (path, id)."""
    rows = [{"path": k.path, "id": k.id} for k in known(data_dir, policy_id)]
    if {"path": repository, "id": repository_id} in rows:
        return
    rows.append({"path": repository, "id": repository_id})
    write_atomically(data_dir / REPOSITORIES / f"{policy_id}.json", json.dumps(rows, indent=1))
