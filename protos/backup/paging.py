"""Opaque page tokens (AIP-158), bound to the query they continue.

A token is read back as untrusted input: its size, shape and the type and range of the
position it carries are all checked, so a forged one is INVALID_ARGUMENT, never a crash.
"""

import base64
import binascii
import json
from typing import TypeVar

from .errors import InvalidArgument

TOKEN_MAX = 512
SEQUENCE_MAX = 2**63 - 1

Position = TypeVar("Position", str, int)


def encode(query: str, position: str | int) -> str:
    raw = json.dumps({"q": query, "p": position}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(token: str, query: str, kind: type[Position]) -> Position | None:
    """The position a token continues from; None for the first page."""
    if not token:
        return None
    forged = InvalidArgument("page_token", "is not a token this server issued")
    if len(token) > TOKEN_MAX:
        raise forged
    try:
        content = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        position, same_query = content["p"], content["q"] == query
    except (binascii.Error, ValueError, TypeError, KeyError, RecursionError):
        raise forged from None
    if not same_query:
        raise InvalidArgument("page_token", "belongs to a list request with other parameters")
    if type(position) is not kind:
        raise forged
    if isinstance(position, str):
        try:
            position.encode()
        except UnicodeEncodeError:  # JSON may carry a lone surrogate, which no database takes
            raise forged from None
    if isinstance(position, int) and not 0 < position <= SEQUENCE_MAX:
        raise forged
    return position
