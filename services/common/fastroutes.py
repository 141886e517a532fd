"""Hot routes served from the outer ASGI layer, without FastAPI's per-request work.

FastAPI's routing, middleware stack and dependency solving cost about as much CPU per request as
a whole inference of a small model (measured with loadtests/gateway_overhead.py, both in the
gateway and in our model servers). The inference routes stay declared in FastAPI, so the route
table (and the gateway's /openapi.json) is the one source: FastRoutes takes their path regexes
and endpoints from it and calls the same endpoints itself.
"""

from __future__ import annotations

import re
from typing import Any, Awaitable, Callable, Iterable
from urllib.parse import parse_qs

from fastapi.routing import APIRoute

Endpoint = Callable[..., Awaitable[Any]]


class FastRoutes:
    def __init__(self, routes: Iterable[Any], endpoints: Iterable[Endpoint]) -> None:
        """routes: APIRoutes as declared (an app's or a router's `.routes`, where a router is
        included without a prefix); endpoints: the ones to serve fast."""
        wanted = set(endpoints)
        self.table: list[tuple[str, re.Pattern[str], Endpoint]] = [
            (method, route.path_regex, route.endpoint)
            for route in routes
            if isinstance(route, APIRoute) and route.endpoint in wanted
            for method in sorted(route.methods)
        ]
        missing = wanted - {endpoint for _, _, endpoint in self.table}
        if missing:  # a renamed or removed route must not silently fall back to the slow path
            raise ValueError(f"no route declared for {sorted(e.__name__ for e in missing)}")

    def match(self, scope: dict) -> tuple[Endpoint, dict[str, Any]] | None:
        """(endpoint, its path parameters) for an HTTP scope, or None."""
        method, path = scope["method"], scope["path"]
        for m, pattern, endpoint in self.table:
            if method == m and (found := pattern.fullmatch(path)):
                params = found.groupdict()
                if params.get("version") is None and scope["query_string"]:
                    # ?version= as FastAPI's routes take it (the OpenAPI documents it)
                    query = parse_qs(scope["query_string"].decode("latin-1"))
                    params["version"] = query.get("version", [None])[-1]
                return endpoint, params
        return None
