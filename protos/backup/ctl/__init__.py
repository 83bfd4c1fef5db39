"""backupctl: the operator's command line for the backup server (see `backupctl --help`)."""

import os

# grpc-core logs a failed TLS handshake on stderr itself, unless told otherwise before it
# is loaded; backupctl says what failed in its own one line.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

from . import actions, catalog, certificates, status  # noqa: E402, F401 - they register commands
from .root import cli  # noqa: E402


def main() -> None:
    cli.main(prog_name="backupctl")
