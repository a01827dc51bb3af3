"""Settings from the environment, with a data directory that makes itself on first start."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

SECRET_KEY_FILE = "secret-key"  # noqa: S105 - a file name
DATABASE_FILE = "tokensmith.db"
MIN_SECRET_KEY_LENGTH = 32


def write_private_file(path: Path, content: str | bytes) -> None:
    """Create ``path`` with mode 0600 from the start (never world-readable, even briefly)."""
    data = content.encode() if isinstance(content, str) else content
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(path, 0o600)


def _positive_int(env: os._Environ[str] | dict[str, str], name: str, default: int) -> int:
    text = env.get(name)
    if text is None or not text.strip():
        return default
    if not text.strip().isdigit() or int(text) <= 0:
        raise ValueError(f"{name} must be a positive whole number")
    return int(text)


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str
    secret_key_env: str | None = field(default=None, repr=False)
    # Hardening (docs/operations.md): who may set X-Forwarded-For, log format, brute-force limits.
    trusted_proxies: tuple[str, ...] = ()
    log_format: str = "text"
    log_level: str = "INFO"
    failures_per_ip: int = 30
    failures_per_user: int = 10
    failure_window_seconds: int = 60

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        data_dir = Path(env.get("TOKENSMITH_DATA_DIR", "./.tokensmith")).resolve()
        database_url = env.get("TOKENSMITH_DATABASE_URL") or f"sqlite:///{data_dir / DATABASE_FILE}"
        proxies = tuple(p.strip() for p in env.get("TOKENSMITH_TRUSTED_PROXIES", "").split(",") if p.strip())
        log_format = env.get("TOKENSMITH_LOG_FORMAT", "text").strip().lower()
        if log_format not in ("text", "json"):
            raise ValueError("TOKENSMITH_LOG_FORMAT must be 'text' or 'json'")
        return cls(
            data_dir=data_dir, database_url=database_url, secret_key_env=env.get("TOKENSMITH_SECRET_KEY"),
            trusted_proxies=proxies, log_format=log_format,
            log_level=env.get("TOKENSMITH_LOG_LEVEL", "INFO").strip().upper(),
            failures_per_ip=_positive_int(env, "TOKENSMITH_AUTH_FAILURES_PER_IP", 30),
            failures_per_user=_positive_int(env, "TOKENSMITH_AUTH_FAILURES_PER_USER", 10),
            failure_window_seconds=_positive_int(env, "TOKENSMITH_AUTH_FAILURE_WINDOW", 60),
        )

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def ensure_data_dir(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    def secret_key(self) -> bytes:
        """The HMAC key for secret digests: from the environment, else from (or into) the data directory."""
        if self.secret_key_env is not None:
            if len(self.secret_key_env) < MIN_SECRET_KEY_LENGTH:
                raise ValueError(f"TOKENSMITH_SECRET_KEY must be at least {MIN_SECRET_KEY_LENGTH} characters")
            return self.secret_key_env.encode()
        self.ensure_data_dir()
        path = self.data_dir / SECRET_KEY_FILE
        if not path.exists():
            write_private_file(path, secrets.token_urlsafe(48))
        return path.read_text().strip().encode()
