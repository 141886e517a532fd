"""Checks of the HTTP bounds every server of the stack shares (services/common/http_bounds.py),
over raw sockets: run against the gateway (tests/gateway/test_hardening.py) and our model servers
(tests/services/test_modelserver.py) started with BOUNDS_ENV."""

from __future__ import annotations

import socket
import time

import httpx

# Small bounds so that the checks finish in seconds.
BOUNDS_ENV = {"HTTP_HEADER_TIMEOUT_S": "1", "HTTP_BODY_TIMEOUT_S": "1",
              "HTTP_KEEPALIVE_TIMEOUT_S": "1", "HTTP_MAX_CONNECTIONS": "6"}
GIVE_UP_S = 10.0  # far above the 1 s bounds: the checks wait for the server, bounded


def _connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=GIVE_UP_S)
    s.settimeout(GIVE_UP_S)
    return s


def _until_closed(s: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (raises socket.timeout if it
    never does within GIVE_UP_S)."""
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def idle_connection_is_closed(port: int) -> None:
    """Connect and send nothing: 408 and closed (not held forever)."""
    with _connect(port) as s:
        assert _until_closed(s).startswith(b"HTTP/1.1 408")


def slow_headers_are_cut(port: int) -> None:
    """Headers trickling in a line at a time never complete: the connection is closed."""
    with _connect(port) as s:
        s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")
        deadline = time.monotonic() + GIVE_UP_S
        try:
            while time.monotonic() < deadline:
                s.sendall(b"X-Slow: 1\r\n")
                time.sleep(0.2)
        except (BrokenPipeError, ConnectionResetError):
            return
        raise AssertionError("a connection whose headers never complete was kept open")


def slow_body_gets_408(port: int, path: str) -> None:
    with _connect(port) as s:
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  f"Content-Length: 1000\r\n\r\n".encode() + b'{"inputs": [')
        answer = _until_closed(s)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"did not arrive within" in answer


def keepalive_idle_is_closed(port: int, live_path: str) -> None:
    with _connect(port) as s:
        s.sendall(f"GET {live_path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        answer = _until_closed(s)  # answered, then closed once idle for the keep-alive timeout
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]


def connection_cap_answers_503(url: str, port: int, cap: int, live_path: str) -> None:
    held = [_connect(port) for _ in range(cap)]
    try:
        r = httpx.get(f"{url}{live_path}", timeout=GIVE_UP_S)
        assert r.status_code == 503, r.text
    finally:
        for s in held:
            s.close()
    deadline = time.monotonic() + GIVE_UP_S  # and it serves again once they are gone
    while httpx.get(f"{url}{live_path}", timeout=GIVE_UP_S).status_code != 200:
        assert time.monotonic() < deadline, "still refusing after the connections closed"
        time.sleep(0.1)


def check_all(url: str, port: int, infer_path: str, live_path: str = "/v2/health/live") -> None:
    idle_connection_is_closed(port)
    slow_headers_are_cut(port)
    slow_body_gets_408(port, infer_path)
    keepalive_idle_is_closed(port, live_path)
    connection_cap_answers_503(url, port, int(BOUNDS_ENV["HTTP_MAX_CONNECTIONS"]), live_path)
