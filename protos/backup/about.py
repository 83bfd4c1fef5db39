"""The project's name and version, as `--version` prints them on every command."""

from importlib import metadata

DISTRIBUTION = "backup-control-plane"


def version() -> str:
    """The installed version (pyproject's), or 'unknown' when run from a bare checkout."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown"


def version_line(program: str) -> str:
    """`NAME VERSION`, one line, what scripts and packagers parse."""
    return f"{program} {version()}"
