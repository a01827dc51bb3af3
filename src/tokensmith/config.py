"""Settings from the environment, with a data directory that makes itself on first start."""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where settings are read: the CLI's client commands use write_private_file only
    from tokensmith.net.outbound import IPNetwork

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


def _positive_int(env: os._Environ[str] | dict[str, str], name: str, default: int) -> int:
    text = env.get(name)
    if text is None or not text.strip():
        return default
    if not text.strip().isdigit() or int(text) <= 0:
        raise ValueError(f"{name} must be a positive whole number")
    return int(text)


def _whole_number(env: os._Environ[str] | dict[str, str], name: str, default: int) -> int:
    text = env.get(name)
    if text is None or not text.strip():
        return default
    if not text.strip().isdigit():
        raise ValueError(f"{name} must be a whole number (0 turns it off)")
    return int(text)


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str
    secret_key_env: str | None = field(default=None, repr=False)
    encryption_keys_env: str | None = field(default=None, repr=False)
    # Hardening (docs/operations.md): who may set X-Forwarded-For, log format, brute-force limits.
    trusted_proxies: tuple[str, ...] = ()
    log_format: str = "text"
    log_level: str = "INFO"
    failures_per_ip: int = 30
    failures_per_user: int = 10
    failure_window_seconds: int = 60
    failures_per_gateway: int = 600  # a proxy, gateway or cluster speaking for many clients; 0: not counted
    # Private ranges webhooks may reach anyway (on-premises receivers); by default only public addresses.
    webhook_allowed_networks: tuple[IPNetwork, ...] = ()
    # TLS on tokensmith itself (serve --tls-cert/--tls-key): a PEM certificate (chain) and its key.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # Verified identities kept in memory per process (docs/performance.md: about 4 KB each).
    verification_cache_size: int = 10_000
    # S3 access keys whose verification material (derived signing keys, owner) each process keeps in memory.
    access_key_cache_size: int = 10_000
    # Requests (docs/operations.md, "Request limits"): body ceiling and how long slow clients may take.
    max_body_bytes: int = 1024 * 1024
    body_timeout_seconds: int = 30
    header_timeout_seconds: int = 10
    keep_alive_timeout_seconds: int = 5
    max_connections: int = 1000
    # Per-user caps (docs/operations.md, "Per-user caps"): one account cannot fill the database.
    max_tokens_per_user: int = 100
    max_access_keys_per_user: int = 100
    max_sessions_per_user: int = 20
    # How long a browser sign-in request (tokensmith login --web, RFC 8628) waits for approval.
    device_code_seconds: int = 600
    # Workload identity federation: plain-HTTP OIDC issuers on 127.0.0.0/8 (tests, local issuers only).
    allow_loopback_http_issuers: bool = False

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        data_dir = Path(env.get("TOKENSMITH_DATA_DIR", "./.tokensmith")).resolve()
        database_url = env.get("TOKENSMITH_DATABASE_URL") or f"sqlite:///{data_dir / DATABASE_FILE}"
        proxies = tuple(p.strip() for p in env.get("TOKENSMITH_TRUSTED_PROXIES", "").split(",") if p.strip())
        from tokensmith.net.outbound import parse_networks

        log_format = env.get("TOKENSMITH_LOG_FORMAT", "text").strip().lower()
        if log_format not in ("text", "json"):
            raise ValueError("TOKENSMITH_LOG_FORMAT must be 'text' or 'json'")
        return cls(
            data_dir=data_dir, database_url=database_url, secret_key_env=env.get("TOKENSMITH_SECRET_KEY"),
            encryption_keys_env=env.get("TOKENSMITH_ENCRYPTION_KEYS"),
            trusted_proxies=proxies, log_format=log_format,
            log_level=env.get("TOKENSMITH_LOG_LEVEL", "INFO").strip().upper(),
            failures_per_ip=_positive_int(env, "TOKENSMITH_AUTH_FAILURES_PER_IP", 30),
            failures_per_user=_positive_int(env, "TOKENSMITH_AUTH_FAILURES_PER_USER", 10),
            failure_window_seconds=_positive_int(env, "TOKENSMITH_AUTH_FAILURE_WINDOW", 60),
            failures_per_gateway=_whole_number(env, "TOKENSMITH_AUTH_FAILURES_PER_GATEWAY", 600),
            webhook_allowed_networks=parse_networks(env.get("TOKENSMITH_WEBHOOK_ALLOWED_NETWORKS", "")),
            tls_cert=Path(env["TOKENSMITH_TLS_CERT"]) if env.get("TOKENSMITH_TLS_CERT", "").strip() else None,
            tls_key=Path(env["TOKENSMITH_TLS_KEY"]) if env.get("TOKENSMITH_TLS_KEY", "").strip() else None,
            verification_cache_size=_positive_int(env, "TOKENSMITH_VERIFICATION_CACHE_SIZE", 10_000),
            access_key_cache_size=_positive_int(env, "TOKENSMITH_ACCESS_KEY_CACHE_SIZE", 10_000),
            max_body_bytes=_positive_int(env, "TOKENSMITH_MAX_BODY_BYTES", 1024 * 1024),
            body_timeout_seconds=_positive_int(env, "TOKENSMITH_BODY_TIMEOUT", 30),
            header_timeout_seconds=_positive_int(env, "TOKENSMITH_HEADER_TIMEOUT", 10),
            keep_alive_timeout_seconds=_positive_int(env, "TOKENSMITH_KEEP_ALIVE_TIMEOUT", 5),
            max_connections=_positive_int(env, "TOKENSMITH_MAX_CONNECTIONS", 1000),
            max_tokens_per_user=_positive_int(env, "TOKENSMITH_MAX_TOKENS_PER_USER", 100),
            max_access_keys_per_user=_positive_int(env, "TOKENSMITH_MAX_ACCESS_KEYS_PER_USER", 100),
            max_sessions_per_user=_positive_int(env, "TOKENSMITH_MAX_SESSIONS_PER_USER", 20),
            device_code_seconds=_positive_int(env, "TOKENSMITH_DEVICE_CODE_LIFETIME", 600),
            allow_loopback_http_issuers=env.get("TOKENSMITH_ALLOW_LOOPBACK_HTTP_ISSUERS", "").strip() == "1",
        )

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def ensure_data_dir(self) -> None:
        # Owner-only (mkdir's mode is only narrowed by the umask): it holds the database and the keys.
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
