"""Run real ``tokensmith serve`` processes for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _accepts_connections(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1.0).close()
    except OSError:
        return False
    return True


def wait_for_http(url: str, timeout: float = 60.0, process: subprocess.Popen | None = None,
                  verify: str | bool = True) -> None:
    """Wait until ``url`` answers. Polled with a bare TCP connect, then with one HTTP client: building an httpx
    client (its TLS context) costs ~40 ms of CPU, which every 50 ms took a good part of a core from the
    server starting up on the same two cores."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or (443 if parts.scheme == "https" else 80)
    deadline = time.monotonic() + timeout
    context = ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify
    with httpx.Client(timeout=1.0, verify=context) as client:
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode} before answering {url}")
            if _accepts_connections(host, port):
                try:
                    client.get(url)
                    return
                except httpx.HTTPError:
                    pass
            time.sleep(0.01)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


@dataclass
class ServerProcess:
    data_dir: Path
    port: int
    env: dict[str, str]
    process: subprocess.Popen | None = None
    # https: the server was given TOKENSMITH_TLS_CERT/KEY in env; ca_file is the CA to trust it with.
    ca_file: str | None = None
    options: tuple[str, ...] = ()  # more ``tokensmith serve`` options, e.g. ("--workers", "2")
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.data_dir.parent / f"serve-{self.port}.log"

    @property
    def url(self) -> str:
        return f"{'https' if self.ca_file else 'http'}://127.0.0.1:{self.port}"

    @property
    def ready_url(self) -> str:
        """What start() waits for. Not /openapi.json: its first request builds the OpenAPI document (~0.4 s of
        CPU), which a test that never asks for it need not pay; the app answers both once it has started."""
        return f"{self.url}/healthz"

    def start(self) -> ServerProcess:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tokensmith", "serve", "--port", str(self.port), *self.options],
            env=self.env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,  # a process group of its own: stop() can kill --workers' children too
        )
        wait_for_http(self.ready_url, timeout=90.0, process=self.process,  # slow on a busy CI box
                      verify=self.ca_file or True)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


def server_env(data_dir: Path, database_url: str | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENSMITH_")}
    env["TOKENSMITH_DATA_DIR"] = str(data_dir)
    env["TOKENSMITH_LOG_LEVEL"] = "DEBUG"  # the secret-hygiene check scans these logs (tests/hygiene.py)
    env["TOKENSMITH_WEBHOOK_ALLOWED_NETWORKS"] = "127.0.0.0/8"  # the tests' webhook receivers are on loopback
    if database_url and not database_url.startswith("sqlite"):
        env["TOKENSMITH_DATABASE_URL"] = database_url
    env.update(extra)
    return env


def admin_password(url: str, data_dir: Path, verify: Any = True) -> str:
    """The admin's password after the first change: the initial one mints no tokens (403).

    Changed once (to a password derived from the initial one) on first use; later calls find it
    changed already. Every test that signs in as the first admin goes through here.
    """
    remembered = data_dir / "test-admin-password"  # the initial file goes once the password is changed
    if remembered.exists():
        return remembered.read_text().strip()
    initial = (data_dir / "initial-admin-password").read_text().strip()
    changed = initial + "-changed"
    response = httpx.post(f"{url}/v1/auth/password", timeout=60, verify=verify,
                          json={"username": "admin", "password": initial, "new_password": changed})
    if response.status_code not in (204, 401):
        raise RuntimeError(f"changing the initial admin password: {response.status_code} {response.text}")
    remembered.write_text(changed + "\n")
    return changed
