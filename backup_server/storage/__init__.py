"""Where the server keeps what it knows: the `Storage` protocol and its backends.

`interface` says what may be asked and imports no driver, so any module may depend on
it; `sqlite` answers it from one SQLite file (`SqliteStorage.open(path)`, called once by
`backup_server.app`, which hands the storage to every room that needs it).
"""

from .interface import INTERRUPTED, OUTCOME_UNKNOWN, PolicyChange, PolicyCheck, Storage

__all__ = ["INTERRUPTED", "OUTCOME_UNKNOWN", "PolicyChange", "PolicyCheck", "Storage"]
