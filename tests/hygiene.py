"""Secret hygiene for the whole test suite (a pytest plugin, loaded by conftest).

Every secret tokensmith mints in-process is registered (``tokensmith.secrets.generate`` and
``access_key_secret`` are wrapped), and so is every S3 secret key a response hands out
(``secretKey``, ``SecretAccessKey``), even from a server in another process; tests add others
with ``hygiene.register(value)``. While the suite runs:

* the root logger is at DEBUG and every record is scanned,
* every HTTP response received through httpx (TestClient, schemathesis, real servers) is scanned,
  except the one-time reveals: a POST answered 200/201 with ``Cache-Control: no-store``, and the
  AWS SDK token exchange (a GET by design, also no-store),
* at the end, SQLite files and server logs under the session's temporary directory are scanned,
* every PostgreSQL database the tests make is scanned (every text, JSON and bytea column of every
  table) just before it is dropped: fixtures call ``scan_postgres(url)`` there.

A hit on anything shaped like a tokensmith credential (any prefix, valid checksum) or on a
registered value fails the run, as an error in the teardown of the worker's last test. Redaction
(tokensmith.logs) is not installed here on purpose: this check must see what code really logs.
New kinds of reveal (a kubeconfig download, say) are allowed with ``allow_reveal(predicate)``.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tokensmith import secrets

PREFIXES = (secrets.PREFIX, secrets.WEBHOOK_PREFIX, secrets.REPORTER_PREFIX, secrets.DEVICE_CODE_PREFIX)
_SHAPE = re.compile(
    "(?<![A-Za-z0-9_])(?:" + "|".join(PREFIXES) + rf")[0-9A-Za-z]{{{secrets.BODY_LENGTH + secrets.CHECKSUM_LENGTH}}}"
    "(?![A-Za-z0-9])"
)
SCANNED_FILES = ("*.db", "*.db-wal", "*.sqlite", "serve-*.log")
# S3 secret keys as API responses carry them: the create response and the SDK exchange.
_S3_SECRET_FIELD = re.compile(r'"(?:secretKey|SecretAccessKey)"\s*:\s*"([^"\\]{16,})"')
SDK_EXCHANGE_PATH = "/v1/object-storage/temporary-credentials"

_registered: set[str] = set()
_other_formats: set[str] = set()  # registered values not shaped like tsm_/tsw_/tsr_: checked literally
hits: list[str] = []
_reveal_rules: list[Callable[[httpx.Response], bool]] = []


def register(value: str | bytes) -> None:
    """Treat ``value`` as a secret that must never leak (server keys, S3 secret keys, ...)."""
    text = value.decode() if isinstance(value, bytes) else value
    _registered.add(text)
    if not _SHAPE.fullmatch(text):
        _other_formats.add(text)


def allow_reveal(rule: Callable[[httpx.Response], bool]) -> None:
    """Allow responses for which ``rule`` is true to carry a secret (they must still be no-store)."""
    _reveal_rules.append(rule)


def _is_credential(candidate: str) -> bool:
    return any(candidate.startswith(p) and secrets.is_well_formed(candidate, p) for p in PREFIXES)


def find_secrets(text: str) -> list[str]:
    found = [m.group() for m in _SHAPE.finditer(text) if _is_credential(m.group())]
    return found + [value for value in _other_formats if value in text]


def _report(where: str, found: list[str]) -> None:
    for secret in found:
        hits.append(f"{where}: {secret[:4]}…{secret[-4:]}")


def is_one_time_reveal(response: httpx.Response) -> bool:
    if "no-store" not in response.headers.get("cache-control", ""):
        return False
    default = response.request.method == "POST" and response.status_code in (200, 201)
    # The SDK exchange answers a GET with temporary credentials (the AWS container-credentials protocol).
    exchange = response.request.method == "GET" and response.request.url.path == SDK_EXCHANGE_PATH \
        and response.status_code == 200
    return default or exchange or any(rule(response) for rule in _reveal_rules)


def register_returned_secret_keys(text: str) -> None:
    """Register every S3 secret key in a response body, so it is looked for everywhere from now on."""
    for match in _S3_SECRET_FIELD.finditer(text):
        register(match.group(1))


def check_response(response: httpx.Response) -> None:
    """Record a hit when a response that is not a one-time reveal carries a secret."""
    try:
        text = response.text
    except (httpx.ResponseNotRead, UnicodeDecodeError):
        return
    # Registered first: a secret key's first appearance in a response that is not a reveal is a leak too.
    register_returned_secret_keys(text)
    found = find_secrets(text) + find_secrets(str(dict(response.headers)))
    if found and not is_one_time_reveal(response):
        _report(f"response to {response.request.method} {response.request.url.path} ({response.status_code})",
                found)


class _ScanningHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:
            text = f"{record.msg} {record.args}"
        found = find_secrets(text)
        if found:
            _report(f"log {record.name}:{record.levelname}", found)


def _wrap_generate() -> None:
    original = secrets.generate
    if getattr(original, "_hygiene", False):
        return

    @functools.wraps(original)
    def generate(prefix: str = secrets.PREFIX) -> str:
        secret = original(prefix)
        _registered.add(secret)
        return secret

    generate._hygiene = True  # type: ignore[attr-defined]
    secrets.generate = generate


def _wrap_access_key_secret() -> None:
    original = secrets.access_key_secret
    if getattr(original, "_hygiene", False):
        return

    @functools.wraps(original)
    def access_key_secret() -> str:
        secret = original()
        register(secret)  # not shaped like tsm_...: looked for literally
        return secret

    access_key_secret._hygiene = True  # type: ignore[attr-defined]
    secrets.access_key_secret = access_key_secret


def _wrap_httpx() -> None:
    original = httpx.Client.send
    if getattr(original, "_hygiene", False):
        return

    @functools.wraps(original)
    def send(self: httpx.Client, request: httpx.Request, **kwargs: object) -> httpx.Response:
        response = original(self, request, **kwargs)
        if not kwargs.get("stream"):
            check_response(response)
        return response

    send._hygiene = True  # type: ignore[attr-defined]
    httpx.Client.send = send  # type: ignore[method-assign]


def scan_files(root: Path) -> None:
    # Most tests' SQLite files are still byte for byte the migrated template they were copied from (their
    # writes sit in the -wal file next to them): each distinct content is scanned once, its copies named too.
    findings: dict[bytes, list[str]] = {}
    for pattern in SCANNED_FILES:
        for path in root.rglob(pattern):
            try:
                content = path.read_bytes()
            except OSError:
                continue
            digest = hashlib.blake2b(content, digest_size=16).digest()
            if digest not in findings:
                findings[digest] = find_secrets(content.decode("latin-1"))
            if findings[digest]:
                _report(f"file {path.relative_to(root)}", findings[digest])


# PostgreSQL column types that can hold a secret as text or bytes.
_PG_TEXT_TYPES = ("text", "character varying", "character", "json", "jsonb", "bytea", "xml")


def _as_text(value: object) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("latin-1")
    return value if isinstance(value, str) else str(value)


def scan_postgres(url: str) -> None:
    """Scan every text/bytes column of every table of the PostgreSQL database at ``url``.

    A hit is reported as ``postgresql <database>.<table>.<column>``. Call it just before a test
    database is dropped. A scan that cannot run is reported too: an unscanned database proves nothing.
    """
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    engine = create_engine(url)
    database = make_url(url).database
    try:
        with engine.connect() as connection:
            columns: dict[tuple[str, str], list[str]] = {}
            for schema, table, column in connection.execute(text(
                "SELECT table_schema, table_name, column_name FROM information_schema.columns "
                "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') AND data_type = ANY(:types) "
                "ORDER BY table_schema, table_name, ordinal_position"
            ), {"types": list(_PG_TEXT_TYPES)}):
                columns.setdefault((schema, table), []).append(column)
            for (schema, table), names in columns.items():
                quoted = ", ".join(f'"{name}"' for name in names)
                for row in connection.execute(text(f'SELECT {quoted} FROM "{schema}"."{table}"')):
                    for name, value in zip(names, row, strict=True):
                        if value is None:
                            continue
                        found = find_secrets(_as_text(value))
                        if found:
                            _report(f"postgresql {database}.{table}.{name}", found)
    except Exception as exc:
        hits.append(f"postgresql {database}: could not be scanned ({type(exc).__name__})")
    finally:
        engine.dispose()


def pytest_configure(config: pytest.Config) -> None:
    _wrap_generate()
    _wrap_access_key_secret()
    _wrap_httpx()
    handler = _ScanningHandler(level=logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    # Uvicorn's access log, when a server runs in-process, is scanned like everything else.
    logging.getLogger("uvicorn.access").setLevel(logging.DEBUG)


@pytest.fixture(scope="session", autouse=True)
def secret_hygiene(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The final check: fails the session if any secret leaked into a log, a response or a file."""
    from tests.conftest import SECRET_KEY

    register(SECRET_KEY)
    yield
    scan_files(tmp_path_factory.getbasetemp())
    if hits:
        listed = "\n  ".join(sorted(set(hits))[:50])
        pytest.fail(f"secret hygiene: {len(set(hits))} leak(s) found:\n  {listed}", pytrace=False)
