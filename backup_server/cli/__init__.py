"""backupctl: the operator's command line for the backup server (see `backupctl --help`)."""

from . import actions, catalog  # noqa: F401 - registers their commands on `cli`
from .root import cli


def main() -> None:
    cli.main(prog_name="backupctl")
