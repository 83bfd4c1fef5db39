"""`make demo` (examples/demo.sh) runs start to finish and shows what it promises."""

import os
import re
import subprocess
import sys
from pathlib import Path

DEMO = Path(__file__).resolve().parent.parent / "examples" / "demo.sh"


def test_demo_starts_stops_and_shuts_down_cleanly() -> None:
    """Three agents and a down computer: start, stop, the stop session, then a clean exit."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("BACKUP_SERVER", None)
    result = subprocess.run(
        ["bash", str(DEMO)], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "$ backupctl group create branch-office --name 'Branch office' --kind" in out
    assert (
        out.count("4 computers: 2 received, 1 not received, 1 skipped") == 3
    )  # start, stop, session
    assert "start nightly: WARNING" in out and "stop nightly: WARNING" in out
    assert out.count("exit code 3") == 2
    assert "skipped: in pre-installed-agents protection group 'branch-office'" in out
    assert re.search(r"OK: job j-[\w-]+ stopped", out), "the stop found the jobs running"
    assert out.count("not received: computer=dc-down") == 2
    assert out.rstrip().endswith("server and agents stopped cleanly")
