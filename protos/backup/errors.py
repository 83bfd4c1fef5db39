"""The domain's errors: what a request can get wrong, in the operator's words.

    BackupError
    ├── InvalidArgument      a field is malformed, missing or too large (names the field)
    ├── NotFound             a well-shaped id that does not exist
    ├── AlreadyExists        a client-chosen id that is taken
    ├── FailedPrecondition   the request is fine but the state forbids it
    ├── LocalFault           the request is fine but this process failed
    │   └── Unavailable      ... because something it needs (its database) is out of reach now
    ├── ResourceExhausted    the request is fine but a resource is used up (a full disk)
    └── Fenced               a replica's write for work another replica has claimed since

Domain modules raise these; `backup.status` maps each to one gRPC status code.
Anything else that escapes is a bug, not a client's mistake.
"""


class BackupError(Exception):
    """A request the domain refuses, with a message meant for the client."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidArgument(BackupError):
    """A field is malformed, missing or too large."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}", field)
        self.problem = problem


class NotFound(BackupError):
    """A well-shaped id names nothing."""


class AlreadyExists(BackupError):
    """A client-chosen id is already taken."""


class FailedPrecondition(BackupError):
    """The request is well-formed but the stored state does not allow it."""


class LocalFault(BackupError):
    """The request was fine, but this process could not carry it out (e.g. a full disk)."""


class ResourceExhausted(BackupError):
    """The request was fine, but a resource this process needs is used up (a full disk)."""


class Unavailable(LocalFault):
    """The request was fine, but something this process needs (its database server) cannot
    be reached now; the same request may succeed when retried."""


class Fenced(BackupError):
    """A replica wrote for a session or share that is no longer its own (its lease lapsed
    and another replica claimed the work): the storage refused the write, changing
    nothing. `positions` names the computer rows refused, when the write was of rows.
    Not a LocalFault: retrying the write can never succeed; the writer stands down."""

    def __init__(self, message: str, positions: tuple[int, ...] = ()) -> None:
        super().__init__(message)
        self.positions = positions


# A status travels in trailers (grpc-message percent-encoded, the details in base64), which
# peers cap at 8 KiB by default: past that the call ends "Stream removed" instead.
MESSAGE_MAX = 1024

def bounded(message: str, limit: int = MESSAGE_MAX) -> str:
    """The message within `limit` characters: its start (the field name) and end kept."""
    if len(message) <= limit:
        return message
    keep = (limit - 1) // 2
    return f"{message[:keep]}…{message[-keep:]}"
