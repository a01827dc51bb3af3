"""Request limits: a body ceiling before authentication and parsing, and slow clients cut off.

In-process tests check the answers; a real ``tokensmith serve`` checks memory and the socket-level
timeouts and connection bound (uvicorn settings in server.py).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.servers import ServerProcess, free_port, server_env

MiB = 1024 * 1024


def _chunks(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        chunk = b"x" * min(size, total - sent)
        sent += len(chunk)
        yield chunk


def test_a_body_over_the_limit_is_refused_with_a_413_problem_before_authentication(client):
    response = client.post("/v1/auth/token", content=b"{" + b" " * (2 * MiB) + b"}",
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 413
    assert str(1024 * 1024) in response.json()["detail"]


def test_a_streamed_body_without_content_length_is_counted_and_refused_past_the_limit(client):
    response = client.post("/v1/tokens", content=_chunks(3 * MiB),
                           headers={"Content-Type": "application/json", "Authorization": "Bearer tsm_x"})
    assert "content-length" not in response.request.headers
    assert response.status_code == 413


def test_a_body_under_the_limit_still_reaches_the_route(client):
    response = client.post("/v1/auth/token", json={"username": "nobody", "password": "x" * 1000, "name": "n"})
    assert response.status_code == 401


def _through_body_limit(body: bytes, in_memory: bool, max_bytes: int = MiB, chunked: bool = False) -> list[dict]:
    """What ``BodyLimit`` (0.05 s deadline) sends for ``body``, delivered after 0.2 s, when the server
    says (or does not say) that the whole body is in its memory; the app below answers 200."""
    import asyncio

    from tokensmith.api.bodylimit import BodyLimit
    from tokensmith.protocols import BODY_RECEIVED

    async def app(scope: dict, receive, send) -> None:
        message = await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": message["body"]})

    async def run() -> list[dict]:
        sent: list[dict] = []

        async def receive() -> dict:
            await asyncio.sleep(0.2)
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict) -> None:
            sent.append(message)

        framing = (b"transfer-encoding", b"chunked") if chunked else (b"content-length", str(len(body)).encode())
        scope = {"type": "http", "method": "POST", "path": "/", "headers": [framing],
                 "extensions": {BODY_RECEIVED: lambda: in_memory}}
        await BodyLimit(app, max_bytes=max_bytes, timeout=0.05)(scope, receive, send)
        return sent

    return asyncio.run(run())


def test_a_body_the_server_says_it_holds_is_read_without_the_deadline():
    sent = _through_body_limit(b"hello", in_memory=True)
    assert sent[0]["status"] == 200 and sent[1]["body"] == b"hello"


def test_a_body_the_server_does_not_hold_yet_is_read_under_the_deadline():
    assert _through_body_limit(b"hello", in_memory=False)[0]["status"] == 408


def test_a_body_the_server_holds_is_still_counted_against_the_limit():
    # Chunked: no declared length to refuse up front, so the limit is the count of what arrived.
    assert _through_body_limit(b"x" * 100, in_memory=True, max_bytes=10, chunked=True)[0]["status"] == 413


# --- a real server ---------------------------------------------------------------------------


def _vm(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"{field} not in /proc/{pid}/status")


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("limits") / "data"
    proc = ServerProcess(data, free_port(), server_env(
        data, TOKENSMITH_HEADER_TIMEOUT="1", TOKENSMITH_BODY_TIMEOUT="1", TOKENSMITH_LOG_LEVEL="INFO"))
    yield proc.start()
    proc.stop()


@pytest.fixture(scope="module")
def bounded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """At most 8 connections; a header timeout long enough that the held ones stay open on a slow box."""
    data = tmp_path_factory.mktemp("bounded") / "data"
    proc = ServerProcess(data, free_port(), server_env(
        data, TOKENSMITH_HEADER_TIMEOUT="60", TOKENSMITH_MAX_CONNECTIONS="8", TOKENSMITH_LOG_LEVEL="INFO"))
    yield proc.start()
    proc.stop()


def _send_body_raw(port: int, head: bytes, body: Iterator[bytes]) -> bytes:
    """Send a request over a raw socket, stopping when the server answers or closes; its answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        try:
            for chunk in body:
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused mid-body: what we are testing
        try:
            return sock.recv(65536)
        except ConnectionResetError:
            return b""


def test_an_anonymous_100_mb_body_leaves_server_memory_growth_under_50_mb(limited_server):
    pid = limited_server.process.pid
    httpx.get(f"{limited_server.url}/healthz")  # warm: first requests import lazily
    before = _vm(pid, "VmHWM")
    head = (b"POST /v1/auth/token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    chunked = (f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in _chunks(100 * MiB, MiB))
    answer = _send_body_raw(limited_server.port, head, chunked)
    declared = _send_body_raw(
        limited_server.port,
        b"POST /v1/auth/token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 104857600\r\n\r\n",
        _chunks(100 * MiB, MiB))
    growth = _vm(pid, "VmHWM") - before
    print(f"peak RSS growth after two 100 MB bodies: {growth / MiB:.1f} MiB")  # reported with -s
    assert answer.startswith(b"HTTP/1.1 413")
    assert declared.startswith(b"HTTP/1.1 413")
    assert growth < 50 * MiB, f"peak RSS grew by {growth / MiB:.1f} MiB"


def test_a_client_that_does_not_finish_its_headers_is_disconnected(limited_server):
    with socket.create_connection(("127.0.0.1", limited_server.port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        started = time.monotonic()
        assert sock.recv(1024) == b""  # closed by the server, not answered
        assert time.monotonic() - started < 9


def test_a_body_that_does_not_arrive_in_time_gets_408(limited_server):
    with socket.create_connection(("127.0.0.1", limited_server.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/auth/token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"user")
        assert sock.recv(4096).startswith(b"HTTP/1.1 408")


def test_connections_beyond_the_bound_are_refused_with_503(bounded_server):
    idle = []
    try:
        for _ in range(8):  # TOKENSMITH_MAX_CONNECTIONS=8, each holding a slot with half a request
            sock = socket.create_connection(("127.0.0.1", bounded_server.port), timeout=10)
            sock.sendall(b"GET /healthz HTTP/1.1\r\n")
            idle.append(sock)
        time.sleep(0.2)
        assert httpx.get(f"{bounded_server.url}/healthz", timeout=10).status_code == 503
    finally:
        for sock in idle:
            sock.close()
    deadline = time.monotonic() + 10  # the server notices the closed connections and frees their slots
    while httpx.get(f"{bounded_server.url}/healthz", timeout=10).status_code == 503 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert httpx.get(f"{bounded_server.url}/healthz", timeout=10).status_code == 200
