"""`make demo` (examples/demo.sh) runs start to finish and shows what it promises."""

import os
import re
import subprocess
import sys
from pathlib import Path

DEMO = Path(__file__).resolve().parent.parent / "examples" / "demo.sh"
TERMINAL = 100
TIMED_ID = re.compile(r"(?:s|j|rp)-\d{8}-\d{6}-[0-9a-f]{8}")
ID_START = re.compile(r"\b(?:s|j|rp)-\d{8}\S*")
ADDRESS_START = re.compile(r"127\.0\.0\.1:\d*")
TABLE_EDGES = tuple("┏┃┡│└")


def test_demo_backs_up_stops_restores_and_verifies() -> None:
    """On a 100-column terminal: a backup ends with restore points, a stop finds running jobs,
    a restore matches the original by cmp, verify is OK, and no table cuts an id or address."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("BACKUP_SERVER", None)
    env["COLUMNS"] = str(TERMINAL)
    result = subprocess.run(
        ["bash", str(DEMO)], capture_output=True, text=True, env=env, timeout=180
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "$ backupctl group create branch-office --name 'Branch office' --kind" in out
    assert "start nightly: WARNING - 4 computers: 2 received, 1 not received, 1 skipped" in out
    assert out.count("exit code 3") == 1
    assert "warning: computer 'charlie'" in out and "skipped: in pre-installed-agents" in out
    started = list(dict.fromkeys(re.findall(r"OK: job (j-[\w-]+)", out)))
    assert len(started) == 4, "nightly and archive each started on alpha and bravo"
    job_rows = [line for line in out.splitlines() if line.startswith("│ j-")]
    for job_id in started[:2]:
        row = next(line for line in job_rows if job_id in line)
        assert "succeeded" in row and TIMED_ID.search(row.split(job_id)[1]), row
    assert re.search(r"OK: job j-[\w-]+ stopped", out), "the stop found the jobs running"
    assert "archive job on alpha: JOB_STATE_STOPPED" in out
    # The server's own answer to "is every computer protected", from the jobs it followed.
    status_rows = {line.split()[3]: line for line in out.splitlines() if line.startswith("│ nightly")}
    assert "never ran" in status_rows["dc-down"] and "status exits 3" in out
    assert all("succeeded" in status_rows[name] and "rp-" in status_rows[name] for name in ("alpha", "bravo"))
    assert "\n$ cmp " in out and "identical: the restored q3.bin is byte for byte the original" in out
    assert re.search(r"verified \d+ restore points?, .* read back: OK", out)
    assert out.count("not received: computer=dc-down") == 1
    assert out.rstrip().endswith("server and agents stopped cleanly")
    tables = [line for line in out.splitlines() if line.startswith(TABLE_EDGES)]
    assert tables and all(len(line) <= TERMINAL for line in tables)
    assert "…" not in out
    for line in tables:
        for token in ID_START.findall(line):
            assert TIMED_ID.fullmatch(token.rstrip(" │")), f"cut id in {line!r}"
        for address in ADDRESS_START.findall(line):
            assert re.fullmatch(r"127\.0\.0\.1:\d{2,5}", address), f"cut address in {line!r}"
