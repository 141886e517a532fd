"""Per-request facts the middleware logs and counts; handlers fill them in."""

from __future__ import annotations

CTX = "gateway.ctx"  # the scope key holding a request's RequestContext


class RequestContext:
    __slots__ = ("headers", "request_id", "endpoint", "model", "runtime", "served_by")

    def __init__(self, headers: dict[bytes, bytes], request_id: str) -> None:
        self.headers = headers  # request headers, lower-case names
        self.request_id = request_id
        self.endpoint = "other"
        self.model = "-"
        self.runtime = "-"
        self.served_by = "gateway"
