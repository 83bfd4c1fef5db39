"""python -m backup_server.cli: the same as `backupctl`."""

from . import main

main()
