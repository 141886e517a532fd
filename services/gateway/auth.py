"""The bearer-key check of every front end (REST middleware, gRPC): one rule, one message."""

from __future__ import annotations

import hmac

MORE_THAN_ONE = "more than one Authorization header"
UNAUTHORIZED = "missing or wrong API key: send 'Authorization: Bearer <key>'"


def expected_bearer(api_key: str) -> bytes | None:
    """What an authorized request sends, or None when no key is configured (all open)."""
    return f"Bearer {api_key}".encode() if api_key else None


def refusal(values: list[bytes], bearer: bytes | None, public: bool) -> tuple[int, str] | None:
    """(HTTP status, message) if the request must be refused, else None. `values`: every
    Authorization header (or gRPC metadata entry) the request carries."""
    if len(values) > 1:
        # Proxies and servers disagree on which one counts: refuse rather than guess.
        return 400, MORE_THAN_ONE
    if bearer is None or public:
        return None
    if hmac.compare_digest(values[0] if values else b"", bearer):  # constant time
        return None
    return 401, UNAUTHORIZED
