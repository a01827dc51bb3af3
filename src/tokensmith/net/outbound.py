"""Requests to URLs that someone else chose (webhooks today, OIDC JWKS next): one set of rules.

A tenant controls the URL, the DNS name and the server that answers, so everything here assumes
all three are hostile:

* ``parse_url`` refuses what is not a plain ``http(s)://host[:port]/path`` URL: control characters
  or whitespace anywhere, user:password credentials, non-ASCII text, odd host spellings. Numeric
  hosts are read the way browsers and curl read them (``2130706433``, ``0177.0.0.1``, ``0x7f.1``),
  so a spelling cannot smuggle an address past the address rules.
* ``OutboundPolicy`` refuses loopback, private, link-local (the cloud metadata address), multicast,
  unspecified, carrier-grade NAT and reserved addresses, also inside IPv6 (mapped, 6to4, Teredo,
  NAT64), unless the operator allowed the range (``TOKENSMITH_WEBHOOK_ALLOWED_NETWORKS``).
  A name is resolved once; every address it resolves to must pass, and the connection goes to an
  address that passed: no second lookup a rebinding DNS server could answer differently.
* ``fetch`` sends one request to that vetted address, keeps the name in ``Host`` and in TLS SNI /
  certificate checks, asks for ``Accept-Encoding: identity``, never follows redirects, reads at
  most ``max_bytes`` raw bytes (never decompressed) and gives up at one deadline for the whole
  exchange (DNS, connect, TLS, write, read), even against a server that drips one byte at a time.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_URL_LENGTH: Final = 2048
DEFAULT_TIMEOUT: Final = 10.0  # seconds for a whole exchange
DEFAULT_MAX_BYTES: Final = 4096  # of the answer, headers included
_CGNAT: Final = ipaddress.ip_network("100.64.0.0/10")
_NAT64: Final = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_LABEL: Final = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_STATUS_LINE: Final = re.compile(rb"HTTP/1\.[01] ([1-5][0-9]{2})(?: [^\r\n]*)?\r\n")
# getaddrinfo cannot be interrupted; lookups run here so a caller can stop waiting at its deadline.
_resolver: Final = ThreadPoolExecutor(max_workers=8, thread_name_prefix="tokensmith-dns")


class OutboundError(Exception):
    """A request that did not get an answer. The message names no URL, only what went wrong."""


class OutboundRefused(OutboundError):
    """A URL or an address the rules forbid; nothing was sent."""


def parse_networks(text: str, setting: str = "TOKENSMITH_WEBHOOK_ALLOWED_NETWORKS") -> tuple[IPNetwork, ...]:
    """Comma-separated CIDRs (a bare address is a /32 or /128). ValueError names the bad entry."""
    networks = []
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"{setting}: {entry!r} is not an address or CIDR range (e.g. 10.20.0.0/16)") from None
    return tuple(networks)


@dataclass(frozen=True)
class Target:
    """A parsed URL: what to connect to and what to ask for."""

    scheme: str
    host: str  # lower case, no trailing dot; an IP literal in its canonical form (IPv6 without brackets)
    port: int
    request_target: str  # path and query, as sent on the request line
    literal: IPAddress | None  # the address when the host is one (in whatever spelling it was written)

    @property
    def default_port(self) -> bool:
        return self.port == (443 if self.scheme == "https" else 80)

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if isinstance(self.literal, ipaddress.IPv6Address) else self.host
        return host if self.default_port else f"{host}:{self.port}"


def parse_url(url: str) -> Target:
    """Parse ``url`` strictly; OutboundRefused (with a message fit for a 422) when it is not acceptable."""
    if len(url) > MAX_URL_LENGTH:
        raise OutboundRefused(f"the URL is longer than {MAX_URL_LENGTH} characters")
    if any(c.isspace() or ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in url):
        raise OutboundRefused("the URL contains whitespace or control characters")
    if not url.isascii():
        raise OutboundRefused("the URL must be ASCII (percent-encode the path, write the host in punycode)")
    if "\\" in url:
        raise OutboundRefused("the URL contains a backslash")
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unbalanced "[" in the host
        raise OutboundRefused("the URL's host is malformed") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise OutboundRefused("the URL must start with http:// or https://")
    if "@" in parts.netloc:
        raise OutboundRefused("the URL must not contain credentials (user:password@); "
                              "receivers authenticate deliveries by their signature")
    try:
        port = parts.port
    except ValueError:
        raise OutboundRefused("the URL's port is not a number between 1 and 65535") from None
    if port == 0:
        raise OutboundRefused("the URL's port is not a number between 1 and 65535")
    scheme = parts.scheme.lower()
    netloc_host = parts.netloc.rsplit(":", 1)[0] if parts.port is not None else parts.netloc
    host = _parse_host(netloc_host)
    literal = host if isinstance(host, ipaddress.IPv4Address | ipaddress.IPv6Address) else None
    path = parts.path or "/"
    if not path.startswith("/"):
        raise OutboundRefused("the URL must have a host")
    request_target = path + (f"?{parts.query}" if parts.query else "")
    return Target(scheme, str(host), port or (443 if scheme == "https" else 80), request_target, literal)


def _parse_host(text: str) -> IPAddress | str:
    if not text:
        raise OutboundRefused("the URL must have a host")
    if text.startswith("["):
        if not text.endswith("]") or "%" in text:
            raise OutboundRefused("the URL's IPv6 host is malformed (zone identifiers are not allowed)")
        try:
            return ipaddress.IPv6Address(text[1:-1])
        except ValueError:
            raise OutboundRefused("the URL's IPv6 host is malformed") from None
    host = text.lower()
    while host.endswith("."):  # "example.com." and "127.0.0.1." name the same host as without the dot
        host = host[:-1]
    if not host or len(host) > 253:
        raise OutboundRefused("the URL's host name is empty or too long")
    ipv4 = _parse_ipv4(host)
    if ipv4 is not None:
        return ipv4
    if not all(_LABEL.fullmatch(label) for label in host.split(".")):
        raise OutboundRefused("the URL's host is not a valid host name")
    return host


def _parse_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """A numeric host in any spelling browsers and curl accept (WHATWG URL), or None for a name.

    A host whose last label is a number is an address: ``2130706433``, ``0177.0.0.1``, ``0x7f.1``
    and ``127.1`` all mean 127.0.0.1. One that looks numeric but is not valid is refused, not
    treated as a name, so no resolver can read it differently.
    """
    parts = host.split(".")
    if not re.fullmatch(r"[0-9]+|0[xX][0-9a-fA-F]*", parts[-1]):
        return None
    if len(parts) > 4:
        raise OutboundRefused("the URL's host is not a valid IPv4 address")
    numbers = []
    for part in parts:
        try:
            if part[:2].lower() == "0x":
                numbers.append(int(part[2:] or "0", 16))
            elif len(part) > 1 and part.startswith("0"):
                numbers.append(int(part, 8))
            else:
                numbers.append(int(part, 10))
        except ValueError:
            raise OutboundRefused("the URL's host is not a valid IPv4 address") from None
    *leading, last = numbers
    if any(n > 255 for n in leading) or last >= 256 ** (5 - len(numbers)):
        raise OutboundRefused("the URL's host is not a valid IPv4 address")
    value = last
    for n, number in enumerate(leading):
        value += number << (8 * (3 - n))
    return ipaddress.IPv4Address(value)


def classify(address: IPAddress) -> str | None:
    """Why ``address`` is not a public unicast address (a short phrase), or None when it is one."""
    if isinstance(address, ipaddress.IPv6Address):
        for embedded in _embedded_ipv4(address):
            reason = classify(embedded)
            if reason is not None:
                return f"IPv6 form of a {reason}"
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if isinstance(address, ipaddress.IPv4Address) and address in _CGNAT:
        return "carrier-grade NAT"
    if address.is_private:
        return "private"
    if address.is_reserved:
        return "reserved"
    if not address.is_global:
        return "not globally routable"
    return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    found = [a for a in (address.ipv4_mapped, address.sixtofour) if a is not None]
    if address.teredo is not None:
        found.extend(address.teredo)
    if any(address in net for net in _NAT64):
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


@dataclass(frozen=True)
class OutboundPolicy:
    """Which addresses outbound requests may reach: public unicast, plus what the operator allowed."""

    allowed_networks: tuple[IPNetwork, ...] = ()
    resolve_timeout: float = 5.0
    setting: str = "TOKENSMITH_WEBHOOK_ALLOWED_NETWORKS"  # named in refusals: where an operator allows a range

    def check_address(self, address: IPAddress) -> None:
        """OutboundRefused unless ``address`` may be contacted."""
        candidates: list[IPAddress] = [address]
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            candidates.append(address.ipv4_mapped)
        if any(c in net for c in candidates for net in self.allowed_networks if c.version == net.version):
            return
        reason = classify(address)
        if reason is not None:
            raise OutboundRefused(f"the URL's host is not allowed: {reason} address (only public addresses, "
                                  f"unless an operator allows the range with {self.setting})")

    def vet(self, url: str) -> Target:
        """Parse ``url`` and check a literal address; names are checked by ``resolve``."""
        target = parse_url(url)
        if target.literal is not None:
            self.check_address(target.literal)
        return target

    def resolve(self, target: Target, timeout: float | None = None) -> list[tuple[int, tuple]]:
        """(family, sockaddr) pairs to connect to, every one of them vetted; OutboundRefused otherwise.

        Every address of the name must pass: a name that resolves to a public and a private address
        is refused as a whole (the connection could otherwise be steered to either).
        """
        if target.literal is not None:
            if isinstance(target.literal, ipaddress.IPv6Address):
                return [(socket.AF_INET6, (str(target.literal), target.port, 0, 0))]
            return [(socket.AF_INET, (str(target.literal), target.port))]
        future = _resolver.submit(socket.getaddrinfo, target.host, target.port, 0, socket.SOCK_STREAM,
                                  socket.IPPROTO_TCP)
        try:
            infos = future.result(timeout=self.resolve_timeout if timeout is None else max(timeout, 0.01))
        except FutureTimeout:
            raise OutboundError("the host name did not resolve in time") from None
        except (OSError, UnicodeError):
            raise OutboundError("the host name does not resolve") from None
        vetted: list[tuple[int, tuple[Any, ...]]] = []
        for family, _type, _proto, _name, sockaddr in infos:
            if family not in (socket.AF_INET, socket.AF_INET6):
                continue
            address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            self.check_address(address)
            vetted.append((family, sockaddr))
        if not vetted:
            raise OutboundError("the host name does not resolve")
        return vetted

    def check_new_url(self, url: str) -> Target:
        """For storing a URL: parse it, and check what the name resolves to now, if it resolves.

        A name that does not resolve yet is accepted: every request checks again at its own time.
        """
        target = self.vet(url)
        if target.literal is None:
            try:
                self.resolve(target)
            except OutboundRefused:
                raise
            except OutboundError:
                pass
        return target


@dataclass(frozen=True)
class OutboundResponse:
    status: int
    headers: dict[str, str] = field(default_factory=dict)  # names in lower case; empty if not read
    body: bytes = b""  # raw (never decompressed), at most what fit in max_bytes
    complete: bool = False  # the whole answer fit in max_bytes


def fetch(
    policy: OutboundPolicy, method: str, url: str, *, body: bytes = b"", headers: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT, max_bytes: int = DEFAULT_MAX_BYTES, read_body: bool = True,
    tls_context: ssl.SSLContext | None = None,
) -> OutboundResponse:
    """One request under ``policy``; see the module docstring for the guarantees.

    ``read_body=False`` stops at the status line (webhooks need nothing more). Raises
    OutboundRefused (nothing was sent) or OutboundError (no usable answer by the deadline).
    """
    deadline = time.monotonic() + timeout

    def remaining() -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise OutboundError("timed out")
        return left

    target = policy.vet(url)
    addresses = policy.resolve(target, remaining())
    request = _request_bytes(method, target, body, headers or {})
    sock = _connect(addresses, remaining)
    # Per-operation socket timeouts do not bound a server that drips bytes (or a slow TLS
    # handshake); at the deadline the watchdog shuts the socket down, which wakes any blocked call.
    watchdog = threading.Timer(remaining(), _shutdown, args=(sock,))
    watchdog.daemon = True
    watchdog.start()
    try:
        if target.scheme == "https":
            sock.settimeout(remaining())
            sock = (tls_context or ssl.create_default_context()).wrap_socket(sock, server_hostname=target.host)
            watchdog.args = (sock,)
        sock.settimeout(remaining())
        sock.sendall(request)
        raw = _read(sock, remaining, max_bytes, read_body)
    except ssl.SSLError as exc:
        raise OutboundError(f"TLS failed ({exc.reason or type(exc).__name__})") from None
    except TimeoutError:
        raise OutboundError("timed out") from None
    except OSError as exc:
        if time.monotonic() >= deadline:
            raise OutboundError("timed out") from None
        raise OutboundError(f"connection failed ({type(exc).__name__})") from None
    finally:
        watchdog.cancel()
        sock.close()
    return _parse_response(raw, read_body, max_bytes)


def _request_bytes(method: str, target: Target, body: bytes, headers: Mapping[str, str]) -> bytes:
    fixed = {"Host": target.host_header, "Content-Length": str(len(body)), "Connection": "close",
             "Accept-Encoding": "identity"}
    lines = [f"{method} {target.request_target} HTTP/1.1"]
    for name, value in [*fixed.items(), *headers.items()]:
        if name.lower() in ("host", "content-length", "connection", "accept-encoding", "transfer-encoding") \
                and name not in fixed:
            continue  # the fixed framing headers are not the caller's to change
        if not re.fullmatch(r"[A-Za-z0-9-]+", name) or any(c in value for c in "\r\n\0"):
            raise ValueError(f"header {name!r} is not a valid header line")
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _connect(addresses: Iterable[tuple[int, tuple[Any, ...]]], remaining: Callable[[], float]) -> socket.socket:
    error: OSError | None = None
    for family, sockaddr in addresses:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(remaining())
            sock.connect(sockaddr)  # a vetted address: no name lookup here
            return sock
        except OSError as exc:
            sock.close()
            error = exc
    if isinstance(error, TimeoutError):
        raise OutboundError("timed out")
    raise OutboundError(f"connection failed ({type(error).__name__})")


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed: nothing left to wake
        sock.shutdown(socket.SHUT_RDWR)


def _read(sock: socket.socket, remaining: Callable[[], float], max_bytes: int, read_body: bool) -> bytes:
    buffer = bytearray()
    while len(buffer) < max_bytes:
        sock.settimeout(remaining())
        chunk = sock.recv(min(65536, max_bytes - len(buffer)))
        if not chunk:
            remaining()  # the watchdog's shutdown also looks like the end of the answer: that is a timeout
            break
        buffer += chunk
        if not read_body and b"\r\n" in buffer:
            break
        if read_body and _complete(buffer):
            break
    return bytes(buffer)


def _complete(buffer: bytes | bytearray) -> bool:
    head, sep, rest = bytes(buffer).partition(b"\r\n\r\n")
    if not sep:
        return False
    match = re.search(rb"\r\ncontent-length:[ \t]*([0-9]+)", head, re.IGNORECASE)
    return match is not None and len(rest) >= int(match.group(1))


def _parse_response(raw: bytes, read_body: bool, max_bytes: int) -> OutboundResponse:
    match = _STATUS_LINE.match(raw)
    if match is None:
        raise OutboundError("the answer is not HTTP/1.x")
    status = int(match.group(1))
    if not read_body:
        return OutboundResponse(status)
    head, sep, rest = raw.partition(b"\r\n\r\n")
    headers: dict[str, str] = {}
    for line in head.split(b"\r\n")[1:]:
        name, colon, value = line.decode("latin-1").partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    complete = bool(sep) and (len(raw) < max_bytes or _complete(raw))
    if headers.get("transfer-encoding", "").lower() == "chunked":
        decoded = _dechunk(rest)
        return OutboundResponse(status, headers, decoded or b"", decoded is not None)
    return OutboundResponse(status, headers, rest, complete)


def _dechunk(data: bytes) -> bytes | None:
    """The body of a chunked answer, or None when it was cut off (or is malformed)."""
    out = bytearray()
    while True:
        size_line, sep, data = data.partition(b"\r\n")
        try:
            size = int(size_line.split(b";", 1)[0], 16)
        except ValueError:
            return None
        if not sep:
            return None
        if size == 0:
            return bytes(out)
        if len(data) < size + 2:
            return None
        out += data[:size]
        data = data[size + 2:]
