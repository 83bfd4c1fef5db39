"""Opaque page tokens (AIP-158), bound to the query they continue."""

import base64
import binascii
import json

from .errors import InvalidArgument


def encode(query: str, position: str | int) -> str:
    raw = json.dumps({"q": query, "p": position}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(token: str, query: str) -> str | int | None:
    """The position a token continues from; None for the first page."""
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        content = json.loads(raw)
        position = content["p"]
        same_query = content["q"] == query
    except (binascii.Error, ValueError, TypeError, KeyError):
        raise InvalidArgument("page_token", "is not a token this server issued") from None
    if not same_query:
        raise InvalidArgument("page_token", "belongs to a list request with other parameters")
    if not isinstance(position, str | int):
        raise InvalidArgument("page_token", "is not a token this server issued")
    return position
