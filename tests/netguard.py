"""No DNS from the test process: tests talk to loopback only, and a lookup would reach the resolver.

Code under test now resolves webhook host names when a webhook is created, so a fuzzed or example
URL (``https://hooks.example.com/...``) would otherwise send a query to the machine's nameserver.
Names for loopback (``localhost``, /etc/hosts) and address literals still resolve; tests that need
a name use ``tests.receiver.fake_dns``.
"""

from __future__ import annotations

import ipaddress
import socket
from functools import cache
from pathlib import Path
from typing import Any


@cache
def _hosts_file_names() -> frozenset[str]:
    names: set[str] = set()
    try:
        for line in Path("/etc/hosts").read_text().splitlines():
            names.update(n.lower() for n in line.split("#", 1)[0].split()[1:])
    except OSError:
        pass
    return frozenset(names)


def is_local_name(host: Any) -> bool:
    if host is None:
        return True
    name = (host.decode() if isinstance(host, bytes) else str(host)).lower().rstrip(".")
    try:
        ipaddress.ip_address(name.split("%", 1)[0])
        return True
    except ValueError:
        pass
    return name == "localhost" or name.endswith(".localhost") or name in _hosts_file_names()


def guarded(real: Any) -> Any:
    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if not is_local_name(host):
            raise socket.gaierror(socket.EAI_NONAME, "test guard: no DNS lookups from tests (loopback only)")
        return real(host, *args, **kwargs)

    return getaddrinfo
