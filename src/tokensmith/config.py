"""Settings from the environment, with a data directory that makes itself on first start."""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

SECRET_KEY_FILE = "secret-key"  # noqa: S105 - a file name
DATABASE_FILE = "tokensmith.db"
MIN_SECRET_KEY_LENGTH = 32
ENCRYPTION_KEY_FILE = "encryption-key"
ENCRYPTION_KEY_BYTES = 32  # AES-256


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
    encryption_keys_env: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        data_dir = Path(env.get("TOKENSMITH_DATA_DIR", "./.tokensmith")).resolve()
        database_url = env.get("TOKENSMITH_DATABASE_URL") or f"sqlite:///{data_dir / DATABASE_FILE}"
        return cls(data_dir=data_dir, database_url=database_url, secret_key_env=env.get("TOKENSMITH_SECRET_KEY"),
                   encryption_keys_env=env.get("TOKENSMITH_ENCRYPTION_KEYS"))

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

    def encryption_keys(self) -> list[bytes]:
        """AES-256 keys for secrets tokensmith must recover (S3 secret keys), newest first.

        TOKENSMITH_ENCRYPTION_KEYS is a comma-separated list of base64-encoded 32-byte keys: the
        first encrypts, any decrypts (rotation). Unset, one key is generated into the data directory.
        Raises ValueError naming the bad entry's position (never its value).
        """
        if self.encryption_keys_env is not None and self.encryption_keys_env.strip():
            return [_decode_encryption_key(text, n) for n, text in
                    enumerate(re.split(r"[,\s]+", self.encryption_keys_env.strip()), start=1)]
        self.ensure_data_dir()
        path = self.data_dir / ENCRYPTION_KEY_FILE
        if not path.exists():
            write_private_file(path, base64.b64encode(secrets.token_bytes(ENCRYPTION_KEY_BYTES)).decode() + "\n")
        return [_decode_encryption_key(path.read_text().strip(), 1)]


def _decode_encryption_key(text: str, position: int) -> bytes:
    try:
        key = base64.b64decode(text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != ENCRYPTION_KEY_BYTES:
        raise ValueError(f"TOKENSMITH_ENCRYPTION_KEYS entry {position} is not a base64-encoded "
                         f"{ENCRYPTION_KEY_BYTES}-byte key (make one with: openssl rand -base64 32)")
    return key
