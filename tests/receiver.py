"""A webhook receiver on 127.0.0.1 that records what it gets and can be told to fail."""

from __future__ import annotations

import contextlib
import json
import socket
import socketserver
import threading
import time
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    server: ThreadingHTTPServer
    received: list[Received] = field(default_factory=list)
    fail_next: int = 0  # answer 500 to this many requests
    delay: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def reset(self) -> None:
        with self.lock:
            self.received.clear()
            self.fail_next = 0
            self.delay = 0.0

    def of_type(self, event: str) -> list[Received]:
        return [r for r in self.received if r.json["type"] == event]


def start_receiver() -> Receiver:
    holder: dict[str, Receiver] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            receiver = holder["r"]
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            if receiver.delay:
                time.sleep(receiver.delay)
            with receiver.lock:
                failing = receiver.fail_next > 0
                if failing:
                    receiver.fail_next -= 1
                receiver.received.append(Received({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(500 if failing else 204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder["r"] = Receiver(server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return holder["r"]


# --- hostile receivers -----------------------------------------------------------------------

_BOMB: list[bytes] = []


def gzip_bomb(megabytes: int = 400) -> bytes:
    """About ``megabytes`` KB of gzip that inflates to ``megabytes`` MB of zeros (made once)."""
    if not _BOMB:
        packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: gzip framing
        zeros = bytes(1 << 20)
        _BOMB.append(b"".join([*(packer.compress(zeros) for _ in range(megabytes)), packer.flush()]))
    return _BOMB[0]


@dataclass
class Hostile:
    """A receiver that answers like an attacker: ``mode`` is one of

    * ``gzip``: 200 with ``Content-Encoding: gzip`` and a body that inflates to 400 MB;
    * ``endless``: 200, then body bytes as fast as the client takes them, forever;
    * ``slow``: 200, then one body byte every 0.1 s, forever;
    * ``drip``: a status line that never ends, one byte every 0.1 s;
    * ``hang``: reads the request and never answers;
    * ``redirect``: 302 to ``location``.
    """

    server: socketserver.ThreadingTCPServer
    mode: str
    location: str = ""
    requests: list[bytes] = field(default_factory=list)  # request heads received
    closing: threading.Event = field(default_factory=threading.Event)

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def stop(self) -> None:
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()


def start_hostile(mode: str, location: str = "") -> Hostile:
    if mode == "gzip":
        gzip_bomb()  # made before the first request, so answering is immediate
    holder: dict[str, Hostile] = {}

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            hostile = holder["h"]
            sock: socket.socket = self.request
            sock.settimeout(30)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = sock.recv(65536)
                if not chunk:
                    return
                head += chunk
            hostile.requests.append(head.split(b"\r\n\r\n", 1)[0])
            with contextlib.suppress(OSError):  # the client hung up: what a careful client does
                self.answer(hostile, sock)

        def answer(self, hostile: Hostile, sock: socket.socket) -> None:
            if hostile.mode == "gzip":
                bomb = gzip_bomb()
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
                             b"Content-Length: %d\r\n\r\n" % len(bomb) + bomb)
            elif hostile.mode == "endless":
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n")
                block = b"x" * 65536
                while not hostile.closing.is_set():
                    sock.sendall(block)
            elif hostile.mode == "slow":
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n")
                while not hostile.closing.is_set():
                    sock.sendall(b"x")
                    time.sleep(0.1)
            elif hostile.mode == "drip":
                sock.sendall(b"HTTP/1.1 200 ")
                while not hostile.closing.is_set():
                    sock.sendall(b"a")
                    time.sleep(0.1)
            elif hostile.mode == "hang":
                hostile.closing.wait(60)
            elif hostile.mode == "redirect":
                sock.sendall(f"HTTP/1.1 302 Found\r\nLocation: {hostile.location}\r\nContent-Length: 0\r\n\r\n"
                             .encode())

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    holder["h"] = Hostile(server, mode, location)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return holder["h"]


def guard_loopback(monkeypatch) -> list[object]:  # type: ignore[no-untyped-def]
    """Make every outbound ``connect`` of this test refuse anything but loopback; returns what was tried.

    So an SSRF test cannot send a packet elsewhere even when the code under test is wrong.
    """
    tried: list[object] = []
    real_connect = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> None:
        tried.append(address)
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and host.split("%")[0] not in ("127.0.0.1", "::1", "localhost") \
                and not host.startswith("127."):
            raise ConnectionRefusedError(f"test guard: no traffic to {host} (loopback only)")
        real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    return tried


def fake_dns(monkeypatch, names: dict[str, list[str]]) -> list[str]:  # type: ignore[no-untyped-def]
    """``socket.getaddrinfo`` answers ``names`` (name -> addresses) and nothing else; returns the names asked."""
    asked: list[str] = []
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name not in names:
            if name.replace(".", "").isdigit() or ":" in name:  # a literal address: no lookup at all
                return real(host, port, *args, **kwargs)
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        asked.append(name)
        out = []
        for address in names[name]:
            if ":" in address:
                out.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, int(port), 0, 0)))
            else:
                out.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port))))
        return out

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return asked
