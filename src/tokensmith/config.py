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


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str
    secret_key_env: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        data_dir = Path(env.get("TOKENSMITH_DATA_DIR", "./.tokensmith")).resolve()
        database_url = env.get("TOKENSMITH_DATABASE_URL") or f"sqlite:///{data_dir / DATABASE_FILE}"
        return cls(data_dir=data_dir, database_url=database_url, secret_key_env=env.get("TOKENSMITH_SECRET_KEY"))

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
