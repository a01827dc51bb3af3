"""Brute force at the doors where someone else's token is checked, and at the S3 and console doors.

Forward-auth, introspection, TokenReview and S3 verify are called by a proxy, gateway or API
server that speaks for many clients: invalid tokens count against the original client when it is
known (refused in the door's own format) and against the intermediary with a much higher ceiling,
over which only the verification cache answers (tokens in use keep passing). The S3 token exchange
and the console sign-in are called by the client itself: per address (and user name), like the API.
"""

import json
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from tests.conftest import SECRET_KEY
from tests.pki import CA_PEM
from tests.s3sign import signed
from tokensmith import metrics, secrets
from tokensmith.accounts.service import AccountService
from tokensmith.api.app import create_app
from tokensmith.config import Settings

PER_IP, PER_USER, PER_GATEWAY = 5, 3, 12
PROXY = ("10.0.0.2", 40000)
ATTACKER, VICTIM = "203.0.113.66", "198.51.100.7"
ELSEWHERE = ("192.0.2.50", 40000)


def limited_app(database, clock, tmp_path, **overrides):
    settings = Settings(tmp_path / "data", database.url, failures_per_ip=PER_IP, failures_per_user=PER_USER,
                        failures_per_gateway=PER_GATEWAY, failure_window_seconds=60, **overrides)
    return create_app(settings, database, SECRET_KEY, clock)


@pytest.fixture
def app(database, clock, tmp_path):
    """Trusted proxies off: the default."""
    return limited_app(database, clock, tmp_path)


@pytest.fixture
def proxied_app(database, clock, tmp_path):
    return limited_app(database, clock, tmp_path, trusted_proxies=("10.0.0.0/8",))


def client_at(app, address=PROXY) -> TestClient:
    return TestClient(app, raise_server_exceptions=False, client=address)


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def rate_limited(door: str) -> float:
    return metrics.REGISTRY.get_sample_value("tokensmith_verifications_total",
                                             {"door": door, "outcome": "rate_limited"}) or 0.0


# --- forward-auth ------------------------------------------------------------------------------


def forward_auth(client: TestClient, secret: str | None = None, forwarded_for: str | None = None):
    headers = bearer(secret or secrets.generate())
    if forwarded_for is not None:
        headers["X-Forwarded-For"] = forwarded_for
    return client.get("/v1/auth/verify", headers=headers)


def flood_forward_auth(app, forwarded_for: str | None = None, count: int = PER_IP + 1) -> None:
    proxy = client_at(app)
    for _ in range(count):
        forward_auth(proxy, forwarded_for=forwarded_for)


def test_forward_auth_refuses_a_flooding_forwarded_client_with_403_and_retry_after(proxied_app):
    proxy = client_at(proxied_app)
    assert [forward_auth(proxy, forwarded_for=ATTACKER).status_code for _ in range(PER_IP)] == [401] * PER_IP
    refused = forward_auth(proxy, forwarded_for=ATTACKER)
    assert refused.status_code == 403  # nginx auth_request passes 401/403 on; a 429 would become a 500
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.headers["content-type"] == "application/problem+json"


def test_forward_auth_passes_another_client_behind_the_same_proxy_during_a_flood(proxied_app, alice):
    flood_forward_auth(proxied_app, ATTACKER, PER_IP * 3)
    assert forward_auth(client_at(proxied_app), alice.secret, forwarded_for=VICTIM).status_code == 200


def test_forward_auth_refuses_the_flooding_client_even_with_a_valid_token(proxied_app, alice):
    flood_forward_auth(proxied_app, ATTACKER)
    assert forward_auth(client_at(proxied_app), alice.secret, forwarded_for=ATTACKER).status_code == 403


def test_forward_auth_limits_a_direct_caller_per_address_when_trusted_proxies_are_set(proxied_app):
    direct = client_at(proxied_app, (ATTACKER, 1))
    statuses = [forward_auth(direct).status_code for _ in range(PER_IP + 1)]
    assert statuses == [401] * PER_IP + [403]


def test_forward_auth_ignores_x_forwarded_for_by_default(app):
    proxy = client_at(app)
    # Each guess names another client; ignored, they all count against the proxy itself.
    statuses = [forward_auth(proxy, forwarded_for=f"10.9.9.{n}").status_code for n in range(PER_GATEWAY + 1)]
    assert statuses == [401] * (PER_GATEWAY + 1)
    assert forward_auth(proxy, forwarded_for="10.9.9.250").status_code == 403  # memory-only now


def test_forward_auth_counts_a_proxy_without_forwarded_client_against_a_much_higher_ceiling(app):
    proxy = client_at(app)
    assert {forward_auth(proxy).status_code for _ in range(PER_GATEWAY)} == {401}  # far past PER_IP


def test_forward_auth_over_the_proxy_ceiling_still_passes_tokens_in_use(app, alice):
    proxy = client_at(app)
    assert forward_auth(proxy, alice.secret).status_code == 200  # in use: now in the verification cache
    flood_forward_auth(app, count=PER_GATEWAY * 2)
    assert forward_auth(proxy, alice.secret).status_code == 200


def test_forward_auth_over_the_proxy_ceiling_refuses_what_memory_cannot_vouch_for(app, bob):
    flood_forward_auth(app, count=PER_GATEWAY + 1)
    refused = forward_auth(client_at(app), bob.secret)  # valid, but not seen lately: no database lookup now
    assert refused.status_code == 403 and "Retry-After" in refused.headers


def test_forward_auth_limits_are_shared_by_replicas(database, clock, tmp_path, alice):
    first = limited_app(database, clock, tmp_path, trusted_proxies=("10.0.0.0/8",))
    second = limited_app(database, clock, tmp_path, trusted_proxies=("10.0.0.0/8",))
    for _ in range(PER_IP):
        assert forward_auth(client_at(first), forwarded_for=ATTACKER).status_code == 401
    assert forward_auth(client_at(second), forwarded_for=ATTACKER).status_code == 403
    assert forward_auth(client_at(first), forwarded_for=ATTACKER).status_code == 403
    assert forward_auth(client_at(second), alice.secret, forwarded_for=VICTIM).status_code == 200


# --- introspection -----------------------------------------------------------------------------


def introspect(client: TestClient, caller_secret: str, token: str, client_address: str | None = None):
    headers = bearer(caller_secret)
    if client_address is not None:
        headers["Tokensmith-Client-Address"] = client_address
    return client.post("/v1/oauth2/introspect", data={"token": token}, headers=headers)


def flood_introspection(app, caller_secret: str, client_address: str | None = None,
                        count: int = PER_IP + 1) -> None:
    gateway = client_at(app)
    for _ in range(count):
        introspect(gateway, caller_secret, secrets.generate(), client_address)


def test_introspection_limits_bad_caller_credentials_per_address_with_429(app):
    gateway = client_at(app)
    statuses = [introspect(gateway, secrets.generate(), secrets.generate()).status_code for _ in range(PER_IP + 1)]
    assert statuses == [401] * PER_IP + [429]


def test_introspection_answers_inactive_to_a_flooding_named_client_even_for_a_valid_token(app, admin, alice):
    flood_introspection(app, admin.secret, ATTACKER)
    response = introspect(client_at(app), admin.secret, alice.secret, ATTACKER)
    assert response.status_code == 200 and response.json() == {"active": False}


def test_introspection_still_describes_another_named_clients_valid_token_during_a_flood(app, admin, alice):
    flood_introspection(app, admin.secret, ATTACKER, PER_IP * 3)
    response = introspect(client_at(app), admin.secret, alice.secret, VICTIM)
    assert response.json()["active"] is True


def test_introspection_never_refuses_the_gateway_itself_and_passes_tokens_in_use(app, admin, alice):
    gateway = client_at(app)
    assert introspect(gateway, admin.secret, alice.secret).json()["active"] is True
    flood_introspection(app, admin.secret, count=PER_GATEWAY * 2)
    response = introspect(gateway, admin.secret, alice.secret)
    assert response.status_code == 200 and response.json()["active"] is True


def test_introspection_over_the_gateway_ceiling_answers_exactly_inactive_for_the_unvouched(app, admin, bob):
    flood_introspection(app, admin.secret, count=PER_GATEWAY + 1)
    response = introspect(client_at(app), admin.secret, bob.secret)
    assert response.status_code == 200 and response.json() == {"active": False}


def test_introspection_refuses_a_client_address_that_is_not_an_ip_address(app, admin, alice):
    response = introspect(client_at(app), admin.secret, alice.secret, "gateway.local")
    assert response.status_code == 422 and "Tokensmith-Client-Address" in response.json()["detail"]


# --- Kubernetes TokenReview ---------------------------------------------------------------------


@pytest.fixture
def kube(app, admin, alice):
    """alice holds a token granting prod; prod's API server holds a webhook credential."""
    client = client_at(app, ELSEWHERE)
    cluster = client.post("/v1/clusters", headers=admin.headers, json={
        "name": "prod", "server": "https://10.0.0.1:6443", "certificate_authority": CA_PEM, "region": "eu-1"}).json()
    token = client.post("/v1/tokens", headers=alice.headers, json={"name": "kube", "clusters": ["prod"]}).json()
    credential = client.post(f"/v1/clusters/{cluster['id']}/webhook-credentials", headers=admin.headers).json()
    return {"cluster": cluster["id"], "secret": token["secret"], "credential": credential["secret"]}


def review(client: TestClient, kube: dict, token: str, credential: str | None = None):
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}}
    return client.post(f"/v1/clusters/{kube['cluster']}/tokenreview", json=body,
                       headers=bearer(credential or kube["credential"]))


def flood_tokenreview(app, kube: dict, count: int = PER_GATEWAY + 1) -> None:
    apiserver = client_at(app)
    for _ in range(count):
        review(apiserver, kube, secrets.generate())


def test_tokenreview_limits_bad_webhook_credentials_per_address_with_429(app, kube):
    apiserver = client_at(app)
    statuses = [review(apiserver, kube, kube["secret"], secrets.generate(secrets.WEBHOOK_PREFIX)).status_code
                for _ in range(PER_IP + 1)]
    assert statuses == [401] * PER_IP + [429]


def test_tokenreview_never_refuses_the_cluster_and_passes_tokens_in_use(app, kube):
    apiserver = client_at(app)
    assert review(apiserver, kube, kube["secret"]).json()["status"]["authenticated"] is True
    flood_tokenreview(app, kube, PER_GATEWAY * 2)
    response = review(apiserver, kube, kube["secret"])
    assert response.status_code == 200 and response.json()["status"]["authenticated"] is True


def test_tokenreview_over_the_cluster_ceiling_is_a_failed_review_saying_when_to_retry(app, kube):
    flood_tokenreview(app, kube)
    response = review(client_at(app), kube, secrets.generate())
    assert response.status_code == 200
    body = response.json()
    assert body["kind"] == "TokenReview" and body["apiVersion"] == "authentication.k8s.io/v1"
    assert body["status"]["authenticated"] is False and "retry after" in body["status"]["error"]


def test_tokenreview_refusals_over_the_ceiling_are_audited_under_one_reason(app, kube, database):
    from sqlalchemy import select

    from tokensmith.db.models import AuditEvent
    from tokensmith.kube.denials import CLUSTER_LIMITED

    apiserver = client_at(app)
    answers = [review(apiserver, kube, secrets.generate()).json()["status"] for _ in range(PER_GATEWAY * 2)]
    refused_over_ceiling = sum("too many" in answer.get("error", "") for answer in answers)
    app.state.context.denials.flush(force=True)
    with database.session() as session:
        limited = [json.loads(e.details) for e in session.scalars(
            select(AuditEvent).where(AuditEvent.action == "kube.tokenreview.denied"))
            if json.loads(e.details)["reason"].startswith("too many")]
    # One coalescing key for the whole storm over the ceiling, whatever "retry after N s" said:
    # the first refusal written at once, the rest as one counted event.
    assert [d["reason"] for d in limited] == [CLUSTER_LIMITED, CLUSTER_LIMITED]
    assert refused_over_ceiling > 2 and sum(d["count"] for d in limited) == refused_over_ceiling


def test_tokenreview_cluster_ceiling_is_shared_by_replicas(app, kube, database, clock, tmp_path):
    other_replica = limited_app(database, clock, tmp_path)
    flood_tokenreview(app, kube, PER_GATEWAY)  # up to the ceiling on one replica
    review(client_at(other_replica), kube, secrets.generate())  # the failure past it, on the other
    response = review(client_at(other_replica), kube, secrets.generate())
    assert "retry after" in response.json()["status"]["error"]


# --- S3 SigV4 verify -----------------------------------------------------------------------------


@pytest.fixture
def s3_key(app, alice):
    client = client_at(app, ELSEWHERE)
    response = client.post("/v1/object-storage/access-keys", headers=alice.headers,
                           json={"durationSeconds": 0, "attributes": {"name": "k"}})
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture
def real_time(clock):
    from datetime import UTC, datetime

    clock.set(datetime.now(UTC))  # SigV4 dates are checked against the clock
    return clock


def s3_verify(client: TestClient, gateway_secret: str, payload: dict, client_address: str | None = None):
    headers = bearer(gateway_secret)
    if client_address is not None:
        headers["Tokensmith-Client-Address"] = client_address
    return client.post("/v1/object-storage/verify", json=payload, headers=headers)


def forged(key: dict) -> dict:
    return signed("GET", "/bucket/object", key["accessKeyId"], "x" * 40)


def flood_s3_verify(app, gateway_secret: str, key: dict, client_address: str | None,
                    count: int = PER_IP + 1) -> None:
    gateway = client_at(app)
    for _ in range(count):
        s3_verify(gateway, gateway_secret, forged(key), client_address)


def test_s3_verify_answers_rate_limited_to_a_flooding_named_client(app, real_time, admin, s3_key):
    flood_s3_verify(app, admin.secret, s3_key, ATTACKER, PER_IP)
    response = s3_verify(client_at(app), admin.secret, forged(s3_key), ATTACKER)
    assert response.status_code == 200
    assert response.json() == {"valid": False, "reason": "rate limited"}
    assert 1 <= int(response.headers["Retry-After"]) <= 60


def test_s3_verify_still_accepts_another_named_clients_valid_signature_during_a_flood(
        app, real_time, admin, s3_key):
    flood_s3_verify(app, admin.secret, s3_key, ATTACKER, PER_IP * 3)
    genuine = signed("GET", "/bucket/object", s3_key["accessKeyId"], s3_key["secretKey"])
    assert s3_verify(client_at(app), admin.secret, genuine, VICTIM).json()["valid"] is True


def test_s3_verify_never_refuses_the_gateway_itself(app, real_time, admin, s3_key):
    flood_s3_verify(app, admin.secret, s3_key, None, PER_GATEWAY * 2)
    genuine = signed("GET", "/bucket/object", s3_key["accessKeyId"], s3_key["secretKey"])
    assert s3_verify(client_at(app), admin.secret, genuine).json()["valid"] is True


# --- S3 token exchange (the SDK calls directly) -------------------------------------------------


def exchange(client: TestClient, secret: str):
    return client.get("/v1/object-storage/temporary-credentials", headers={"Authorization": secret})


def flood_exchange(app, count: int = PER_IP + 1) -> None:
    sdk = client_at(app, (ATTACKER, 1))
    for _ in range(count):
        exchange(sdk, secrets.generate())


def test_s3_exchange_limits_invalid_tokens_per_address_with_429_and_retry_after(app):
    sdk = client_at(app, (ATTACKER, 1))
    assert [exchange(sdk, secrets.generate()).status_code for _ in range(PER_IP)] == [401] * PER_IP
    refused = exchange(sdk, secrets.generate())
    assert refused.status_code == 429 and 1 <= int(refused.headers["Retry-After"]) <= 60


def test_s3_exchange_serves_another_client_during_a_flood(app, alice):
    flood_exchange(app, PER_IP * 3)
    response = exchange(client_at(app, (VICTIM, 1)), alice.secret)
    assert response.status_code == 200 and response.json()["AccessKeyId"]


# --- console sign-in ------------------------------------------------------------------------------


@pytest.fixture
def carol(database, clock):
    with database.session() as session:
        accounts = AccountService(session, clock)
        accounts.create_user(accounts.get_or_create_org("default"), "carol", "correct horse battery")
    return "carol"


def console_sign_in(app, address: tuple[str, int], password: str, username: str = "carol"):
    browser = client_at(app, address)
    page = browser.get("/sign-in").text
    csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    return browser.post("/sign-in", data={"csrf": csrf, "username": username, "password": password},
                        follow_redirects=False)


def flood_console(app, count: int = PER_USER + 1) -> None:
    for _ in range(count):
        console_sign_in(app, (ATTACKER, 1), "wrong password!")


def test_console_sign_in_flood_gets_a_page_saying_when_to_retry(app, carol):
    flood_console(app, PER_USER)
    refused = console_sign_in(app, (ATTACKER, 1), "wrong password!")
    assert refused.status_code == 429 and refused.headers["content-type"].startswith("text/html")
    assert "Too many failed sign-ins" in refused.text and "try again in" in refused.text
    assert 1 <= int(refused.headers["Retry-After"]) <= 60


def test_console_sign_in_is_limited_per_user_name_across_addresses(app, carol):
    for octet in range(PER_USER):
        console_sign_in(app, (f"192.0.2.{octet}", 1), "wrong password!")
    assert console_sign_in(app, ("192.0.2.0", 1), "correct horse battery").status_code == 429


def test_console_sign_in_lets_the_owner_in_from_a_clean_address_while_the_name_is_locked(app, carol):
    for octet in range(PER_USER + 2):
        console_sign_in(app, (f"192.0.2.{octet}", 1), "wrong password!")
    assert console_sign_in(app, ("198.51.100.7", 1), "correct horse battery").status_code == 303


def test_console_sign_in_of_another_user_elsewhere_succeeds_during_a_flood(app, carol, database, clock):
    with database.session() as session:
        accounts = AccountService(session, clock)
        accounts.create_user(accounts.get_or_create_org("default"), "erin", "erin's long password")
    flood_console(app)
    assert console_sign_in(app, (VICTIM, 1), "erin's long password", "erin").status_code == 303


def test_console_sign_in_limits_are_shared_by_replicas(database, clock, tmp_path, carol):
    first, second = limited_app(database, clock, tmp_path), limited_app(database, clock, tmp_path)
    for _ in range(PER_USER - 1):
        assert console_sign_in(first, (ATTACKER, 1), "wrong password!").status_code == 401
    assert console_sign_in(second, (ATTACKER, 1), "wrong password!").status_code == 401
    # The name is over its limit on the shared counters: the guessing address is refused on the first.
    assert console_sign_in(first, (ATTACKER, 1), "correct horse battery").status_code == 429


# --- leak reports ------------------------------------------------------------------------------------


def report_leak(client: TestClient, reporter_secret: str):
    return client.post("/v1/leaks", json=[{"token": secrets.generate(), "url": "https://x.example/y"}],
                       headers=bearer(reporter_secret))


def flood_leaks(app, count: int = PER_IP + 1) -> None:
    attacker = client_at(app, (ATTACKER, 1))
    for _ in range(count):
        report_leak(attacker, secrets.generate(secrets.REPORTER_PREFIX))


@pytest.fixture
def reporter_secret(database, clock) -> str:
    from tokensmith.leaks import LeakService

    with database.session() as session:
        return LeakService(session, clock, SECRET_KEY).create_reporter("scanner").secret


def test_leak_reports_limit_bad_reporter_credentials_per_address_with_429(app):
    attacker = client_at(app, (ATTACKER, 1))
    statuses = [report_leak(attacker, secrets.generate(secrets.REPORTER_PREFIX)).status_code
                for _ in range(PER_IP + 1)]
    assert statuses == [401] * PER_IP + [429]
    assert 1 <= int(report_leak(attacker, secrets.generate(secrets.REPORTER_PREFIX)).headers["Retry-After"]) <= 60


def test_leak_reports_from_another_address_are_received_during_a_flood(app, reporter_secret):
    flood_leaks(app)
    assert report_leak(client_at(app, (VICTIM, 1)), reporter_secret).status_code == 202


# --- metrics: every door counts what it refused ---------------------------------------------------

FLOODS: dict[str, Callable[..., None]] = {
    "forward-auth": lambda app, admin, kube, s3_key: flood_forward_auth(app, count=PER_GATEWAY + 2),
    "introspection": lambda app, admin, kube, s3_key: flood_introspection(app, admin.secret, ATTACKER, PER_IP + 2),
    "tokenreview": lambda app, admin, kube, s3_key: flood_tokenreview(app, kube, PER_GATEWAY + 2),
    "s3-verify": lambda app, admin, kube, s3_key: flood_s3_verify(app, admin.secret, s3_key, ATTACKER),
    "s3-exchange": lambda app, admin, kube, s3_key: flood_exchange(app, PER_IP + 2),
    "console": lambda app, admin, kube, s3_key: flood_console(app),
    "leaks": lambda app, admin, kube, s3_key: flood_leaks(app, PER_IP + 2),
}


@pytest.mark.parametrize("door", list(FLOODS), ids=list(FLOODS))
def test_every_door_counts_rate_limited_verifications(door, app, real_time, admin, kube, s3_key, carol):
    before = rate_limited(door)
    FLOODS[door](app, admin, kube, s3_key)
    assert rate_limited(door) > before


@pytest.mark.parametrize("path", ["/v1/oauth2/introspect", "/v1/object-storage/verify"])
def test_the_gateway_doors_document_the_client_address_header(app, path):
    parameters = app.openapi()["paths"][path]["post"]["parameters"]
    assert [p["name"] for p in parameters if p["in"] == "header"] == ["Tokensmith-Client-Address"]
