"""Fuzzing: schemathesis generates requests from /openapi.json, with and without a token.

No request may end in a 5xx, and every response must match the documented status codes, content
types and schemas. Two targets: the app in-process (ASGI), and a real ``tokensmith serve`` on
loopback (HTTP, its own /openapi.json, the whole server stack). The default run is bounded to
seconds; ``--run-slow`` runs many more examples.
"""

import time
from datetime import timedelta

import httpx
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests import hygiene
from tests.conftest import SECRET_KEY
from tests.servers import ServerProcess, admin_password, free_port, server_env
from tokensmith.accounts.service import AccountService
from tokensmith.api.app import create_app
from tokensmith.clock import FrozenClock
from tokensmith.config import Settings
from tokensmith.db.database import Database
from tokensmith.db.migrate import upgrade
from tokensmith.errors import InvalidInput
from tokensmith.tokens.expiration import MAX_LIFETIME, PRESETS, parse_duration, resolve_expiry
from tokensmith.tokens.service import TokenService


@schemathesis.check
def no_secret_leaks(ctx, response, case) -> None:
    """Over real HTTP schemathesis uses ``requests``: hand its responses to the hygiene check too."""
    request = httpx.Request(response.request.method or "GET", response.request.url or "http://unknown/")
    headers = [(name, value) for name, values in response.headers.items() for value in values]
    hygiene.check_response(httpx.Response(response.status_code, headers=headers, content=response.content,
                                          request=request))


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]
QUICK = settings(max_examples=6, deadline=None, derandomize=True,
                 suppress_health_check=list(HealthCheck))
LONG = settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def fuzz_target(tmp_path_factory):
    """One app on one SQLite database for the whole module, with an admin token to fuzz as."""
    path = tmp_path_factory.mktemp("fuzz") / "fuzz.db"
    database = Database(f"sqlite:///{path}")
    upgrade(database.engine)
    clock = FrozenClock()
    with database.session() as session:
        accounts = AccountService(session, clock)
        admin = accounts.create_user(accounts.get_or_create_org("default"), "admin", None, is_admin=True)
        secret = TokenService(session, clock, SECRET_KEY).create(admin, "fuzz", expiration="never").secret
    # Limits out of the way: this module sends thousands of bad requests from one address.
    settings_ = Settings(path.parent, database.url, failures_per_ip=10**9, failures_per_user=10**9)
    app = create_app(settings_, database, SECRET_KEY, clock)
    yield app, {"Authorization": f"Bearer {secret}"}
    database.dispose()


def fuzz(app, headers: dict[str, str] | None, profile: settings) -> None:
    """Run every operation of the app's OpenAPI document through schemathesis; fail listing what broke."""
    fuzz_schema(schemathesis.openapi.from_asgi("/openapi.json", app), headers, profile)


def fuzz_schema(schema, headers: dict[str, str] | None, profile: settings, checks: list = CHECKS) -> None:
    failures: list[str] = []
    cases, operations, started = 0, 0, time.monotonic()
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        # Valid and invalid requests alike: invalid ones must be refused with a documented 4xx.
        @given(case=operation.as_strategy(GenerationMode.POSITIVE) | operation.as_strategy(GenerationMode.NEGATIVE))
        @profile
        def run(case) -> None:
            nonlocal cases
            cases += 1
            case.call_and_validate(headers=headers, checks=checks)

        try:
            run()
        except Unsatisfiable:
            pass  # no invalid request can be made for this operation (e.g. nothing but an optional header)
        except BaseException as exc:  # schemathesis raises exception groups; one operation must not hide others
            if isinstance(exc, KeyboardInterrupt):
                raise
            failures.append(f"{operation.method.upper()} {operation.path}: {str(exc)[:1500]}")
    # The numbers for docs/performance.md and the threat model (shown with ``-s``).
    print(f"fuzzed {cases} cases over {operations} operations in {time.monotonic() - started:.1f} s, "
          f"{len(failures)} failing operation(s)")
    assert not failures, "\n\n".join(failures)


def test_fuzz_unauthenticated(fuzz_target):
    fuzz(fuzz_target[0], None, QUICK)


def test_fuzz_authenticated(fuzz_target):
    fuzz(fuzz_target[0], fuzz_target[1], QUICK)


@pytest.mark.slow
def test_fuzz_unauthenticated_long(fuzz_target):
    fuzz(fuzz_target[0], None, LONG)


@pytest.mark.slow
def test_fuzz_authenticated_long(fuzz_target):
    fuzz(fuzz_target[0], fuzz_target[1], LONG)


@pytest.fixture(scope="module")
def running_server(tmp_path_factory):
    """A real ``tokensmith serve`` on loopback (SQLite) and the headers of its admin, signed in once."""
    data = tmp_path_factory.mktemp("fuzz-serve") / "data"
    # Limits out of the way: this module sends thousands of bad requests from one address.
    env = server_env(data, TOKENSMITH_AUTH_FAILURES_PER_IP="1000000000", TOKENSMITH_AUTH_FAILURES_PER_USER="1000000000",
                     TOKENSMITH_LOG_LEVEL="INFO")
    server = ServerProcess(data, free_port(), env).start()
    try:
        password = admin_password(server.url, data)
        signed_in = httpx.post(f"{server.url}/v1/auth/token", timeout=30,
                               json={"username": "admin", "password": password, "name": "fuzz", "expiration": "never"})
        signed_in.raise_for_status()
        yield server, {"Authorization": f"Bearer {signed_in.json()['secret']}"}
    finally:
        server.stop()


def fuzz_server(running_server, authenticated: bool, profile: settings) -> None:
    server, headers = running_server
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    fuzz_schema(schema, headers if authenticated else None, profile, [*CHECKS, no_secret_leaks])
    assert server.process is not None and server.process.poll() is None, "the server died while fuzzed"


def test_fuzz_running_server_unauthenticated(running_server):
    fuzz_server(running_server, False, QUICK)


def test_fuzz_running_server_authenticated(running_server):
    fuzz_server(running_server, True, QUICK)


@pytest.mark.slow
def test_fuzz_running_server_unauthenticated_long(running_server):
    fuzz_server(running_server, False, LONG)


@pytest.mark.slow
def test_fuzz_running_server_authenticated_long(running_server):
    fuzz_server(running_server, True, LONG)


def test_a_huge_duration_is_a_422_not_a_500(client, alice):
    response = client.post("/v1/tokens", json={"name": "x", "expiration": "9999999y"}, headers=alice.headers)
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "expiration"


def test_every_documented_route_is_fuzzed(fuzz_target):
    with TestClient(fuzz_target[0]) as client:
        paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/tokens", "/v1/auth/token", "/healthz", "/readyz", "/metrics"} <= set(paths)



# Doors whose errors follow their own protocol, documented as such: OAuth 2.0 (RFC 6749 error JSON)
# and AWS STS (its XML ErrorResponse), as the clients that call them expect.
OWN_ERROR_FORMAT = {"/v1/oauth2/token": "application/json", "/v1/sts": "text/xml"}


def test_every_operation_with_a_body_documents_its_400_and_422_as_problems(fuzz_target):
    with TestClient(fuzz_target[0]) as client:
        paths = client.get("/openapi.json").json()["paths"]
    with_body = [(path, operation) for path, item in paths.items() for operation in item.values()
                 if "requestBody" in operation]
    assert with_body
    for path, operation in with_body:
        if path in OWN_ERROR_FORMAT:
            assert OWN_ERROR_FORMAT[path] in operation["responses"]["400"]["content"], path
            continue
        for status in ("400", "422"):
            assert "application/problem+json" in operation["responses"][status]["content"], (path, status)

# --- properties of expiration parsing ----------------------------------------------------------

NOW = FrozenClock().now()
UNITS = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1),
         "y": timedelta(days=365)}


@given(amount=st.integers(min_value=1, max_value=9_999_999), unit=st.sampled_from(sorted(UNITS)))
def test_a_duration_within_the_maximum_parses_to_exactly_that_long(amount, unit):
    if amount > MAX_LIFETIME // UNITS[unit]:
        with pytest.raises(InvalidInput):
            parse_duration(f"{amount}{unit}")
    else:
        expected = amount * UNITS[unit]
        assert parse_duration(f"{amount}{unit}") == expected
        # Upper case is the same unit, except M: months or minutes is ambiguous, so it is refused.
        if unit != "m":
            assert resolve_expiry(NOW, f" {amount}{unit.upper()} ") == NOW + expected


@given(text=st.text(max_size=30))
def test_any_text_parses_or_is_refused_with_invalid_input(text):
    try:
        result = parse_duration(text)
    except InvalidInput as exc:
        assert exc.field == "expiration"
        return
    assert result is None or timedelta(0) < result <= MAX_LIFETIME


@given(preset=st.sampled_from(PRESETS))
def test_every_preset_is_accepted(preset):
    expiry = resolve_expiry(NOW, preset)
    assert expiry is None if preset == "never" else NOW < expiry <= NOW + MAX_LIFETIME


@given(offset=st.timedeltas(min_value=timedelta(days=-4000), max_value=timedelta(days=4000)))
def test_an_explicit_instant_is_accepted_only_in_the_future_and_within_the_maximum(offset):
    instant = NOW + offset
    if timedelta(0) < offset <= MAX_LIFETIME:
        assert resolve_expiry(NOW, expires_at=instant) == instant
    else:
        with pytest.raises(InvalidInput):
            resolve_expiry(NOW, expires_at=instant)


@given(naive=st.datetimes())
def test_an_instant_without_timezone_is_refused(naive):
    with pytest.raises(InvalidInput, match="timezone"):
        resolve_expiry(NOW, expires_at=naive)
