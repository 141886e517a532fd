"""Per-request facts the front ends log and count; handlers fill them in."""

from __future__ import annotations

import itertools
import os

CTX = "gateway.ctx"  # the scope key holding a request's RequestContext

# Generated request ids: a per-process random prefix and a counter (uuid4 costs more).
_ID_PREFIX = os.urandom(6).hex()
_ID_COUNTER = itertools.count(1)


def request_id(value: bytes | None) -> str:
    """The client's X-Request-ID when it is short printable ASCII, else a generated one."""
    if value and len(value) <= 128 and value.isascii() and value.decode().isprintable():
        return value.decode()
    return f"{_ID_PREFIX}-{next(_ID_COUNTER):x}"


class RequestContext:
    __slots__ = ("headers", "request_id", "endpoint", "model", "runtime", "served_by")

    def __init__(self, headers: dict[bytes, bytes], request_id: str) -> None:
        self.headers = headers  # request headers, lower-case names (REST)
        self.request_id = request_id
        self.endpoint = "other"
        self.model = "-"
        self.runtime = "-"
        self.served_by = "gateway"
