"""Running the installed `backupctl` as an operator would, and what its errors must look like."""

import asyncio
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

BACKUPCTL = str(Path(sys.executable).with_name("backupctl"))
BIN = str(Path(sys.executable).parent)
# A path that never exists (not /dev/null: a stray shell redirect on a shared machine can
# leave a regular file there for a while).
NO_CONFIG = "/nonexistent/backupctl-tests/config.yaml"


def clean_environment(**extra: str) -> dict[str, str]:
    """This run's environment without the BACKUP_* settings of whoever runs the tests."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("BACKUP_", "BACKUPCTL_"))
    }
    # No config file of whoever runs the tests: a test that wants contexts gives its own.
    env["BACKUPCTL_CONFIG"] = NO_CONFIG
    return {**env, "PATH": f"{BIN}:{os.environ['PATH']}", "COLUMNS": "250", **extra}


async def backupctl(
    server: str, *args: str, env: Mapping[str, str] = {}, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Runs the installed `backupctl` (off the event loop, which serves the server)."""
    return await asyncio.to_thread(
        subprocess.run, [BACKUPCTL, *args], capture_output=True, text=True,
        env=clean_environment(BACKUP_SERVER=server, **env), cwd=cwd, timeout=60,
    )  # fmt: skip


def one_line_error(result: subprocess.CompletedProcess[str], start: str) -> str:
    """Asserts exit 1 with one stderr line `backupctl: <start>...` and no traceback; returns it."""
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"backupctl: {start}"), lines[0]
    return lines[0]
