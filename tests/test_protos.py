"""The generated code is what `make proto` writes from protos/ today."""

import filecmp
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "protos" / "backup" / "v1"


def test_generated_python_is_current(tmp_path: Path) -> None:
    """Regenerating every proto reproduces the committed modules byte for byte."""
    protos = sorted(PROTO_DIR.glob("*.proto"))
    assert protos, "no protos found"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{ROOT / 'protos'}",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            *map(str, protos),
        ],
        check=True,
    )
    generated = sorted((tmp_path / "backup" / "v1").iterdir())
    committed = {
        path.name
        for path in PROTO_DIR.iterdir()
        if path.name.endswith(("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"))
    }
    assert {path.name for path in generated} == committed, "run `make proto`"
    stale = [
        path.name
        for path in generated
        if not filecmp.cmp(path, PROTO_DIR / path.name, shallow=False)
    ]
    assert not stale, f"stale generated code, run `make proto`: {stale}"
