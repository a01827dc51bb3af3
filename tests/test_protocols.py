"""tokensmith's server protocol (protocols.py) writes a pre-encoded answer exactly as uvicorn writes it.

The fast path (api/fastpath.py) sends each answer's headers twice: as the raw ASGI list any server
writes, and as ``EncodedHeaders`` checked and encoded once, which tokensmith's httptools protocol
writes without checking them again. These tests drive the real protocol over an in-memory
transport and compare the bytes on the wire both ways.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from tokensmith.api.fastpath import Answer
from tokensmith.protocols import BODY_RECEIVED, ENCODED_HEADERS, EncodedHeaders, HeaderTimeoutHttpToolsProtocol

HEADERS = [(b"content-length", b"2"), (b"content-type", b"application/json"), (b"X-Tokensmith-User", b"alice"),
           (b"cache-control", b"no-store")]


class Wire(asyncio.Transport):
    """What the server writes, kept in memory."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.writes = 0
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data
        self.writes += 1

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def answering(encoded: bool, headers: list[tuple[bytes, bytes]] = HEADERS, parts: tuple[bytes, ...] = (b"{}",)):
    async def app(scope: dict, receive: Any, send: Any) -> None:
        start: dict[str, Any] = {"type": "http.response.start", "status": 200, "headers": headers}
        if encoded:
            start[ENCODED_HEADERS] = EncodedHeaders.of(headers)
        await send(start)
        for number, part in enumerate(parts, start=1):
            await send({"type": "http.response.body", "body": part, "more_body": number < len(parts)})
    return app


def served(app: Any, request: bytes, access_log: bool = False) -> tuple[bytes, bool]:
    """The bytes the protocol writes answering ``request`` with ``app``, and whether it closed."""
    written, closed, _writes = served_in_writes(app, request, access_log)
    return written, closed


def served_in_writes(app: Any, request: bytes, access_log: bool = False) -> tuple[bytes, bool, int]:
    """``served``, and how many writes the protocol made."""
    async def serve() -> tuple[bytes, bool, int]:
        config = Config(app, http=HeaderTimeoutHttpToolsProtocol, lifespan="off", access_log=access_log,
                        server_header=False, date_header=False)
        config.load()
        protocol = HeaderTimeoutHttpToolsProtocol(config=config, server_state=ServerState(), app_state={},
                                                  _loop=asyncio.get_running_loop())
        wire = Wire()
        protocol.connection_made(wire)
        protocol.data_received(request)
        for _ in range(100):
            if wire.written.endswith(b"{}") or wire.closed:
                break
            await asyncio.sleep(0)
        protocol.connection_lost(None)
        return bytes(wire.written), wire.closed, wire.writes
    return asyncio.run(serve())


@pytest.mark.parametrize("request_bytes", [
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
], ids=["keep-alive", "connection-close", "http-1.0"])
def test_an_encoded_answer_is_written_byte_for_byte_as_uvicorn_writes_its_headers(request_bytes):
    assert served(answering(encoded=True), request_bytes) == served(answering(encoded=False), request_bytes)


def test_an_encoded_answer_goes_out_head_and_body_in_one_write():
    _written, _closed, writes = served_in_writes(answering(encoded=True), b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert writes == 1


@pytest.mark.parametrize(("request_bytes", "parts"), [
    (b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n", (b"{}",)),
    (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", (b"{", b"}")),
    (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", (b"{", b"}")),
], ids=["head-request", "body-in-parts", "body-in-parts-connection-close"])
def test_an_encoded_answer_uvicorn_would_write_otherwise_is_written_as_uvicorn_writes_it(request_bytes, parts):
    assert (served(answering(encoded=True, parts=parts), request_bytes)
            == served(answering(encoded=False, parts=parts), request_bytes))


def test_an_encoded_answer_with_a_body_longer_than_its_length_is_refused_as_uvicorn_refuses_it():
    headers = [(b"content-length", b"1"), (b"content-type", b"application/json")]
    request = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
    encoded = served(answering(encoded=True, headers=headers), request)
    assert encoded == served(answering(encoded=False, headers=headers), request)
    assert encoded[1]  # the connection is closed, not left with a wrong answer on it
    assert not encoded[0].endswith(b"{}")


def test_an_encoded_answer_is_actually_written_from_its_block():
    # Headers that say one thing and a block that says another: the block is what goes out.
    async def app(scope: dict, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": HEADERS,
                    ENCODED_HEADERS: EncodedHeaders.of([(b"content-length", b"2"), (b"x-from", b"block")])})
        await send({"type": "http.response.body", "body": b"{}"})
    written, _closed = served(app, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert written == b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-from: block\r\n\r\n{}"


def test_with_an_access_log_the_answer_takes_uvicorns_own_way():
    written, _ = served(answering(encoded=True), b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", access_log=True)
    assert written == served(answering(encoded=False), b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")[0]


@pytest.mark.parametrize("headers", [
    [(b"content-length", b"0"), (b"x-bad", b"line\r\nbreak")],
    [(b"content-length", b"0"), (b"bad name", b"v")],
    [(b"content-length", b"0"), (b"connection", b"close")],
    [(b"content-length", b"0"), (b"transfer-encoding", b"chunked")],
    [(b"x-no-length", b"v")],
], ids=["control-character-in-value", "space-in-name", "connection", "transfer-encoding", "no-content-length"])
def test_headers_uvicorn_would_refuse_or_frame_itself_cannot_be_encoded(headers):
    with pytest.raises(ValueError):
        EncodedHeaders.of(headers)


def test_an_answer_with_one_more_header_encodes_it_like_the_others():
    answer = Answer.of(200, [(b"content-length", b"0"), (b"x-a", b"1")]).with_header(b"Strict-Transport-Security",
                                                                                   b"max-age=63072000")
    assert answer.encoded == EncodedHeaders.of(answer.headers)
    with pytest.raises(ValueError):
        answer.with_header(b"x-bad", b"\n")


def body_received_when_called(request: bytes) -> bool:
    """What the scope's ``BODY_RECEIVED`` says when the app first runs, after ``request`` arrived."""
    said: list[bool] = []

    async def app(scope: dict, receive: Any, send: Any) -> None:
        said.append(scope["extensions"][BODY_RECEIVED]())
        await answering(encoded=False)(scope, receive, send)

    served(app, request)
    return said[0]


def test_the_server_says_a_whole_body_is_in_memory():
    assert body_received_when_called(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello")


def test_the_server_says_a_body_still_arriving_is_not_in_memory():
    assert not body_received_when_called(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nhello")
