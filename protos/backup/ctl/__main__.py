"""python -m backup.ctl: the same as `backupctl`."""

from . import main

main()
