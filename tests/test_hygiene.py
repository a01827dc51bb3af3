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
