"""The secret-hygiene plugin (tests/hygiene.py) itself: it sees leaks and lets one-time reveals pass."""

import logging

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests import hygiene
from tokensmith import secrets


@pytest.fixture
def isolated_hits():
    """Let a test provoke hits without failing the session, and hand them over."""
    saved = list(hygiene.hits)
    hygiene.hits.clear()
    yield hygiene.hits
    hygiene.hits[:] = saved


def response(method: str, status: int, body: str, **headers: str) -> httpx.Response:
    return httpx.Response(status, text=body, headers=headers, request=httpx.Request(method, "http://t/v1/x"))


def test_every_minted_secret_is_registered():
    assert secrets.generate() in hygiene._registered


@pytest.mark.parametrize("prefix", hygiene.PREFIXES)
def test_a_secret_of_any_kind_in_a_get_response_is_a_hit(isolated_hits, prefix):
    hygiene.check_response(response("GET", 200, f'{{"x": "{secrets.generate(prefix)}"}}'))
    assert len(isolated_hits) == 1 and "GET /v1/x" in isolated_hits[0]


def test_a_one_time_reveal_is_allowed(isolated_hits):
    hygiene.check_response(response("POST", 201, secrets.generate(), **{"Cache-Control": "no-store"}))
    assert isolated_hits == []


def test_a_reveal_without_no_store_is_a_hit(isolated_hits):
    hygiene.check_response(response("POST", 201, secrets.generate()))
    assert len(isolated_hits) == 1


def test_registered_values_of_other_formats_are_found(isolated_hits):
    hygiene.register("AKIA-not-a-tsm-secret-0123456789")
    hygiene.check_response(response("GET", 200, "key=AKIA-not-a-tsm-secret-0123456789"))
    assert len(isolated_hits) == 1
    hygiene._other_formats.discard("AKIA-not-a-tsm-secret-0123456789")


def test_a_logged_secret_is_a_hit(isolated_hits):
    logging.getLogger("tokensmith.careless").debug("got %s", secrets.generate())
    assert len(isolated_hits) == 1 and "tokensmith.careless" in isolated_hits[0]
    assert secrets.PREFIX not in isolated_hits[0][isolated_hits[0].index(":") + 1:].replace("tsm_…", "")


def test_a_secret_in_a_database_file_is_a_hit(isolated_hits, tmp_path):
    leaky = tmp_path / "leaky.db"
    leaky.write_bytes(b"\x00\x01" + secrets.generate().encode() + b"\x00")
    hygiene.scan_files(tmp_path)
    leaky.unlink()  # or the session's own final scan finds it too
    assert len(isolated_hits) == 1 and "leaky.db" in isolated_hits[0]


def test_digests_and_hints_are_not_hits(isolated_hits):
    secret = secrets.generate()
    hygiene.check_response(response("GET", 200, f"{secrets.digest(secret, b'k' * 32)} {secrets.mask(secret)}"))
    assert isolated_hits == []


# --- S3 secret keys ------------------------------------------------------------------------------


@pytest.fixture
def forget_registered():
    """Values a test registers are dropped afterwards (they are deliberately leaked here)."""
    before_registered, before_other = set(hygiene._registered), set(hygiene._other_formats)
    yield
    hygiene._registered.intersection_update(before_registered)
    hygiene._other_formats.intersection_update(before_other)


def s3_secret() -> str:
    # Not through secrets.access_key_secret: this one must be registered by what the response says.
    return secrets.random_base62(secrets.ACCESS_KEY_SECRET_LENGTH)


def test_every_minted_s3_secret_key_is_registered(forget_registered):
    assert secrets.access_key_secret() in hygiene._other_formats


def test_a_secret_key_a_response_returns_is_registered_and_a_later_leak_is_a_hit(isolated_hits, forget_registered):
    secret = s3_secret()
    hygiene.check_response(response("POST", 201, f'{{"accessKeyId": "TSMP0", "secretKey": "{secret}"}}',
                                     **{"Cache-Control": "no-store"}))
    assert isolated_hits == [] and secret in hygiene._other_formats
    hygiene.check_response(response("GET", 200, f'{{"items": [{{"note": "{secret}"}}]}}'))
    assert len(isolated_hits) == 1 and "GET /v1/x" in isolated_hits[0]
    assert secret not in isolated_hits[0]  # the report itself shows only the ends


def test_a_secret_key_first_seen_in_a_response_that_is_no_reveal_is_a_hit(isolated_hits, forget_registered):
    hygiene.check_response(response("GET", 200, f'[{{"SecretAccessKey": "{s3_secret()}"}}]'))
    assert len(isolated_hits) == 1


def test_a_leaked_secret_key_in_a_log_or_a_database_file_is_a_hit(isolated_hits, forget_registered, tmp_path):
    secret = secrets.access_key_secret()
    logging.getLogger("tokensmith.careless").info("signing with %s", secret)
    leaky = tmp_path / "leaky.db"
    leaky.write_bytes(b"\x00row" + secret.encode() + b"\x00")
    hygiene.scan_files(tmp_path)
    leaky.unlink()
    assert len(isolated_hits) == 2
    assert "tokensmith.careless" in isolated_hits[0] and "leaky.db" in isolated_hits[1]


def test_the_sdk_exchange_may_return_its_secret_key_to_a_get(isolated_hits, forget_registered):
    body = f'{{"AccessKeyId": "TSMT0", "SecretAccessKey": "{s3_secret()}", "Token": "TSMT0"}}'
    exchange = httpx.Response(200, text=body, headers={"Cache-Control": "no-store"},
                              request=httpx.Request("GET", f"http://t{hygiene.SDK_EXCHANGE_PATH}"))
    hygiene.check_response(exchange)
    assert isolated_hits == []


@pytest.fixture
def probe_table(postgres_url):
    """A scratch table in the worker's PostgreSQL database, dropped afterwards."""
    engine = create_engine(postgres_url)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE hygiene_probe (id integer, note varchar(200), blob bytea, doc jsonb)"))
    yield engine
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE hygiene_probe"))
    engine.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("column", ["note", "blob", "doc"])
def test_a_secret_in_a_postgresql_row_is_a_hit_naming_table_and_column(isolated_hits, postgres_url, probe_table,
                                                                       column):
    secret = secrets.generate()
    value = {"note": secret, "blob": b"\x00" + secret.encode() + b"\xff", "doc": f'{{"k": "{secret}"}}'}[column]
    with probe_table.begin() as connection:
        connection.execute(text(f"INSERT INTO hygiene_probe (id, {column}) VALUES (1, :value)"), {"value": value})
    hygiene.scan_postgres(postgres_url)
    with probe_table.begin() as connection:
        connection.execute(text("DELETE FROM hygiene_probe"))  # or the session's own final scan finds it too
    assert len(isolated_hits) == 1 and f"hygiene_probe.{column}" in isolated_hits[0]


@pytest.mark.postgres
def test_a_postgresql_database_without_secrets_is_clean(isolated_hits, postgres_url, probe_table):
    with probe_table.begin() as connection:
        connection.execute(text("INSERT INTO hygiene_probe (id, note) VALUES (1, :value)"),
                           {"value": secrets.mask(secrets.generate())})
    hygiene.scan_postgres(postgres_url)
    assert isolated_hits == []


def test_a_postgresql_database_that_cannot_be_scanned_is_a_hit(isolated_hits):
    hygiene.scan_postgres("postgresql+psycopg://nobody@127.0.0.1:1/absent?connect_timeout=2")
    assert len(isolated_hits) == 1 and "could not be scanned" in isolated_hits[0]


def test_responses_the_fuzzer_receives_over_real_http_are_scanned(isolated_hits):
    import requests
    from schemathesis.core.transport import Response

    from tests.test_fuzz import no_secret_leaks

    request = requests.Request("GET", "http://127.0.0.1:1/v1/tokens").prepare()
    received = Response(status_code=200, headers={"content-type": ["application/json"]}, request=request,
                        content=f'{{"s": "{secrets.generate()}"}}'.encode(), elapsed=0.1, verify=False)
    no_secret_leaks(None, received, None)
    assert len(isolated_hits) == 1 and "GET /v1/tokens" in isolated_hits[0]
