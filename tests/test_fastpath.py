"""The hot doors' fast path (api/fastpath.py) answers whoami, introspection and TokenReview exactly
as their routes do (forward-auth: tests/test_forward_auth_fastpath.py).

The first request of a caller is answered by the route (a cache miss, or a first use from an
address to audit); the next ones by the fast path, from memory. Each test checks which path
answered (``tokensmith_fast_path_answers_total``), so "the same answer" is never a route compared
with itself. Refusals, cache misses and whatever the fast path cannot read cheaply go to the route.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.conftest import SECRET_KEY
from tests.pki import CA_PEM
from tests.s3sign import presigned, signed
from tokensmith import metrics, secrets
from tokensmith.api.app import create_app
from tokensmith.config import Settings
from tokensmith.db.database import Database
from tokensmith.db.models import AuditEvent, Token

V1 = "authentication.k8s.io/v1"
V1BETA1 = "authentication.k8s.io/v1beta1"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture(autouse=True)
def hearing_other_replicas(client, app):
    """On PostgreSQL the listener clears every cache once when it connects: let it connect first."""
    if app.state.context.database.engine.dialect.name == "postgresql":
        assert app.state.context.verifier.background.listening.wait(10)


def fast_answers(door: str) -> float:
    return metrics.REGISTRY.get_sample_value("tokensmith_fast_path_answers_total", {"door": door}) or 0.0


def verifications(door: str) -> float:
    return metrics.REGISTRY.get_sample_value("tokensmith_verifications_total", {"door": door, "outcome": "ok"}) or 0.0


def answer(response) -> tuple[int, dict[str, str], object]:
    """What a client sees, but the Date header (it ticks); JSON bodies parsed."""
    headers = {k: v for k, v in response.headers.items() if k != "date"}
    body = response.json() if response.headers.get("content-type") == "application/json" else response.content
    return response.status_code, headers, body


def slow_then_fast(door: str, call):
    """The route's answer and the fast path's, checking which path gave each."""
    before = fast_answers(door)
    slow = call()
    assert fast_answers(door) == before, "the first call must reach the route"
    for _ in range(5):  # PostgreSQL: an earlier write's notice may still arrive and drop a cache entry once
        fast = call()
        if fast_answers(door) == before + 1:
            return slow, fast
    raise AssertionError("the fast path never answered")


# --- whoami ----------------------------------------------------------------------------------


def whoami(client, account):
    return client.get("/v1/whoami", headers=account.headers)


def test_whoami_from_the_fast_path_is_the_routes_answer(client, alice):
    slow, fast = slow_then_fast("api", lambda: whoami(client, alice))
    assert answer(fast) == answer(slow)
    assert fast.status_code == 200 and fast.json()["user"]["username"] == "alice"
    assert fast.headers["Cache-Control"] == "no-store" and fast.headers["X-Frame-Options"] == "DENY"


def test_whoami_counts_one_verification_and_one_cache_lookup_per_call_either_way(client, alice):
    def lookups() -> float:
        return sum(metrics.REGISTRY.get_sample_value("tokensmith_verification_cache_lookups_total",
                                                     {"result": r}) for r in ("hit", "miss"))

    whoami(client, alice)  # the route
    ok, looked_up = verifications("api"), lookups()
    whoami(client, alice)  # the fast path
    assert verifications("api") == ok + 1 and lookups() == looked_up + 1


def test_whoami_after_the_token_changes_is_the_new_answer(client, alice):
    slow_then_fast("api", lambda: whoami(client, alice))
    extended = client.patch(f"/v1/tokens/{alice.token_id}", json={"expiration": "90d"}, headers=alice.headers)
    assert extended.status_code == 200, extended.text
    assert whoami(client, alice).json()["token"]["expires_at"] == extended.json()["expires_at"]


def test_whoami_of_a_deleted_token_is_refused_from_the_next_call_on(client, alice):
    slow_then_fast("api", lambda: whoami(client, alice))
    assert client.delete(f"/v1/tokens/{alice.token_id}", headers=alice.headers).status_code == 204
    assert whoami(client, alice).status_code == 401


def test_whoami_of_a_token_that_expired_meanwhile_is_refused(client, make_account, clock):
    account = make_account("dave", expiration="1h")
    slow_then_fast("api", lambda: whoami(client, account))
    clock.advance(timedelta(hours=2))
    refused = whoami(client, account)
    assert refused.status_code == 401 and "expired" in refused.headers["WWW-Authenticate"]


def test_whoami_from_a_new_address_takes_the_route_which_audits_it(app, alice, database):
    first, second = TestClient(app, client=("198.51.100.1", 1000)), TestClient(app, client=("198.51.100.2", 1000))
    with first, second:
        slow_then_fast("api", lambda: whoami(first, alice))
        before = fast_answers("api")
        assert whoami(second, alice).status_code == 200
        assert fast_answers("api") == before  # a first use from here: the route, which audits it
    with database.session() as session:
        addresses = session.scalars(select(AuditEvent.client_ip).where(
            AuditEvent.action == "token.used_from_new_ip")).all()
    assert "198.51.100.2" in addresses


def test_whoami_notes_the_last_use_from_the_fast_path(client, alice, database, app):
    slow_then_fast("api", lambda: whoami(client, alice))
    app.state.context.verifier.usage.flush(force=True)
    with database.session() as session:
        token = session.scalar(select(Token).where(Token.public_id == alice.token_id))
        assert token.last_used_at is not None and token.last_used_ip == "testclient"


# --- introspection ---------------------------------------------------------------------------


def introspect(client, caller, token: str, **headers: str):
    return client.post("/v1/oauth2/introspect", data={"token": token},
                       headers={**caller.headers, **headers})


def test_introspection_from_the_fast_path_is_the_routes_answer(client, admin, alice):
    slow, fast = slow_then_fast("introspection", lambda: introspect(client, admin, alice.secret))
    assert answer(fast) == answer(slow)
    assert fast.json()["active"] is True and fast.json()["username"] == "alice"


def test_introspection_of_another_organizations_token_is_inactive_on_the_fast_path(client, admin, mallory):
    introspect(client, mallory, mallory.secret)  # caches mallory's token
    slow, fast = slow_then_fast("introspection", lambda: introspect(client, admin, mallory.secret))
    assert fast.json() == slow.json() == {"active": False}


def test_introspection_counts_the_caller_and_the_subject_either_way(client, admin, alice):
    introspect(client, admin, alice.secret)
    callers, subjects = verifications("api"), verifications("introspection")
    introspect(client, admin, alice.secret)
    assert verifications("api") == callers + 1 and verifications("introspection") == subjects + 1


def test_introspection_of_an_unknown_token_takes_the_route(client, admin, alice):
    slow_then_fast("introspection", lambda: introspect(client, admin, alice.secret))
    before = fast_answers("introspection")
    assert introspect(client, admin, secrets.generate()).json() == {"active": False}
    assert fast_answers("introspection") == before


def test_introspection_with_a_bad_client_address_is_the_routes_refusal(client, admin, alice):
    slow_then_fast("introspection", lambda: introspect(client, admin, alice.secret))
    refused = introspect(client, admin, alice.secret, **{"Tokensmith-Client-Address": "not-an-ip"})
    assert refused.status_code == 422 and "Tokensmith-Client-Address" in refused.json()["detail"]


@pytest.mark.parametrize("body", ["token=a&token=b", "token=x&extra=1", "%zz", "token="],
                         ids=["repeated", "unknown field", "bad encoding", "empty token"])
def test_forms_the_fast_path_cannot_read_plainly_go_to_the_route(client, admin, alice, body):
    slow_then_fast("introspection", lambda: introspect(client, admin, alice.secret))
    before = fast_answers("introspection")
    response = client.post("/v1/oauth2/introspect", content=body.replace("x", alice.secret),
                           headers={**admin.headers, **FORM})
    assert response.status_code in (200, 400, 422)
    assert fast_answers("introspection") == before


# --- TokenReview -----------------------------------------------------------------------------


@pytest.fixture
def cluster(client, admin):
    response = client.post("/v1/clusters", headers=admin.headers, json={
        "name": "prod", "server": "https://10.0.0.1:6443", "certificate_authority": CA_PEM, "region": "eu-1"})
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture
def credential(client, admin, cluster):
    response = client.post(f"/v1/clusters/{cluster['id']}/webhook-credentials", headers=admin.headers)
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture
def kube_token(client, alice, cluster):
    response = client.post("/v1/tokens", headers=alice.headers, json={"name": "kube", "clusters": ["prod"]})
    assert response.status_code == 201, response.text
    return response.json()["secret"]


def review(client, cluster_ref, credential, token, api_version=V1, **spec):
    body = {"apiVersion": api_version, "kind": "TokenReview", "spec": {"token": token, **spec}}
    return client.post(f"/v1/clusters/{cluster_ref}/tokenreview", content=json.dumps(body),
                       headers={"Authorization": f"Bearer {credential['secret']}", "Content-Type": "application/json"})


@pytest.mark.parametrize("api_version", [V1, V1BETA1])
def test_a_review_from_the_fast_path_is_the_routes_answer(client, cluster, credential, kube_token, api_version):
    slow, fast = slow_then_fast("tokenreview", lambda: review(client, cluster["id"], credential, kube_token,
                                                               api_version))
    assert answer(fast) == answer(slow)
    assert fast.json()["status"]["authenticated"] is True and fast.json()["apiVersion"] == api_version


def test_a_review_asking_for_the_clusters_audience_is_the_routes_answer(client, cluster, credential, kube_token):
    audiences = ["https://10.0.0.1:6443"]
    slow, fast = slow_then_fast("tokenreview", lambda: review(client, cluster["id"], credential, kube_token,
                                                               audiences=audiences))
    assert answer(fast) == answer(slow) and fast.json()["status"]["audiences"] == audiences


def test_a_review_by_cluster_name_is_answered_too(client, cluster, credential, kube_token):
    slow, fast = slow_then_fast("tokenreview", lambda: review(client, "prod", credential, kube_token))
    assert answer(fast) == answer(slow)


def test_a_review_counts_the_credential_and_the_token_either_way(client, cluster, credential, kube_token):
    review(client, cluster["id"], credential, kube_token)
    credentials, tokens = verifications("tokenreview-credential"), verifications("tokenreview")
    review(client, cluster["id"], credential, kube_token)
    assert verifications("tokenreview-credential") == credentials + 1 and verifications("tokenreview") == tokens + 1


def test_a_refused_review_takes_the_route_which_audits_it(client, cluster, credential, kube_token, alice):
    slow_then_fast("tokenreview", lambda: review(client, cluster["id"], credential, kube_token))
    before = fast_answers("tokenreview")
    not_granted = review(client, cluster["id"], credential, alice.secret)  # cached, but not for this cluster
    wrong_audience = review(client, cluster["id"], credential, kube_token, audiences=["elsewhere"])
    assert not_granted.json()["status"]["authenticated"] is False
    assert wrong_audience.json()["status"]["authenticated"] is False
    assert fast_answers("tokenreview") == before


def test_a_revoked_webhook_credential_is_refused_from_the_next_review_on(client, admin, cluster, credential,
                                                                         kube_token):
    slow_then_fast("tokenreview", lambda: review(client, cluster["id"], credential, kube_token))
    revoked = client.delete(f"/v1/clusters/{cluster['id']}/webhook-credentials/{credential['credential']['id']}",
                            headers=admin.headers)
    assert revoked.status_code == 204
    assert review(client, cluster["id"], credential, kube_token).status_code == 401


def test_a_webhook_credential_revoked_by_another_process_is_refused_there_too(database_url, client, admin, cluster,
                                                                            credential, kube_token, clock, tmp_path):
    """Another worker (SQLite: the change feed) or replica (PostgreSQL: LISTEN/NOTIFY) forgets it too."""
    other = Database(database_url)  # another process's engine
    settings = Settings(tmp_path / "other", database_url)
    with TestClient(create_app(settings, other, SECRET_KEY, clock)) as elsewhere:
        if other.engine.dialect.name == "postgresql":
            assert elsewhere.app.state.context.verifier.background.listening.wait(10)
        slow_then_fast("tokenreview", lambda: review(elsewhere, cluster["id"], credential, kube_token))
        revoked = client.delete(
            f"/v1/clusters/{cluster['id']}/webhook-credentials/{credential['credential']['id']}", headers=admin.headers)
        assert revoked.status_code == 204
        if other.engine.dialect.name == "sqlite":  # the next review reads the change feed first
            assert review(elsewhere, cluster["id"], credential, kube_token).status_code == 401
        deadline = time.monotonic() + 1.0  # PostgreSQL: the notice arrives within milliseconds
        while review(elsewhere, cluster["id"], credential, kube_token).status_code != 401:
            assert time.monotonic() < deadline, "the other process still accepts the revoked credential"
            time.sleep(0.005)
    other.dispose()


def test_a_credential_of_another_cluster_is_refused_on_the_fast_path_too(client, admin, cluster, credential,
                                                                         kube_token):
    other = client.post("/v1/clusters", headers=admin.headers, json={
        "name": "staging", "server": "https://10.0.0.2:6443", "certificate_authority": CA_PEM,
        "region": "eu-1"}).json()
    slow_then_fast("tokenreview", lambda: review(client, cluster["id"], credential, kube_token))
    assert review(client, other["id"], credential, kube_token).status_code == 401


def test_a_deleted_token_is_refused_from_the_next_review_on(client, alice, cluster, credential, kube_token):
    slow_then_fast("tokenreview", lambda: review(client, cluster["id"], credential, kube_token))
    tokens = client.get("/v1/tokens", headers=alice.headers).json()["items"]
    kube = next(t for t in tokens if t["name"] == "kube")
    assert client.delete(f"/v1/tokens/{kube['id']}", headers=alice.headers).status_code == 204
    assert review(client, cluster["id"], credential, kube_token).json()["status"]["authenticated"] is False


def test_a_malformed_review_is_the_routes_400(client, cluster, credential, kube_token):
    slow_then_fast("tokenreview", lambda: review(client, cluster["id"], credential, kube_token))
    response = client.post(f"/v1/clusters/{cluster['id']}/tokenreview", content=b"{not json",
                           headers={"Authorization": f"Bearer {credential['secret']}"})
    assert response.status_code == 400


def test_the_webhook_credentials_last_use_is_written_once_a_minute(client, cluster, credential, kube_token,
                                                                   clock, admin):
    def last_used() -> str | None:
        listed = client.get(f"/v1/clusters/{cluster['id']}/webhook-credentials", headers=admin.headers).json()
        return listed[0]["last_used_at"]

    slow_then_fast("tokenreview", lambda: review(client, cluster["id"], credential, kube_token))
    first = last_used()
    clock.advance(timedelta(minutes=2))
    before = fast_answers("tokenreview")
    review(client, cluster["id"], credential, kube_token)  # due: the route writes it
    assert fast_answers("tokenreview") == before and last_used() != first


# --- every door ------------------------------------------------------------------------------


@pytest.fixture
def behind_tls_proxy(database, clock, tmp_path):
    settings = Settings(tmp_path / "data", database.url, trusted_proxies=("10.0.0.0/8",))
    with TestClient(create_app(settings, database, SECRET_KEY, clock), client=("10.0.0.2", 40000)) as test_client:
        yield test_client


def test_fast_answers_behind_a_trusted_tls_proxy_carry_hsts_like_the_routes(behind_tls_proxy, alice):
    headers = {**alice.headers, "X-Forwarded-Proto": "https"}
    for door, path in (("forward-auth", "/v1/auth/verify"), ("api", "/v1/whoami")):
        slow, fast = slow_then_fast(door, lambda p=path: behind_tls_proxy.get(p, headers=headers))
        assert answer(fast) == answer(slow)
        assert fast.headers["Strict-Transport-Security"] == "max-age=31536000"


def test_a_body_that_does_not_arrive_in_time_is_the_body_limits_408(app, admin, alice):
    """The fast path reads small bodies itself, under the same timeout as the body limit."""
    import asyncio

    from tokensmith.api.fastpath import HotDoors

    async def run() -> list[dict]:
        sent: list[dict] = []

        async def receive() -> dict:
            await asyncio.sleep(10)
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/v1/oauth2/introspect", "scheme": "http",
                 "headers": [(b"content-length", b"10"), (b"authorization", f"Bearer {admin.secret}".encode())],
                 "client": ("127.0.0.1", 1), "app": app}
        await HotDoors(app, body_timeout=0.05)(scope, receive, send)
        return sent

    sent = asyncio.run(run())
    assert sent[0]["status"] == 408
    assert (b"x-frame-options", b"DENY") in sent[0]["headers"] and b"did not arrive" in sent[1]["body"]


def test_a_body_the_server_says_it_holds_is_read_without_a_deadline_of_the_fast_paths_own(client, app, admin, alice):
    """tokensmith's server protocol says when the whole body is in memory (protocols.BODY_RECEIVED):
    the fast path then arms no timer (there is nothing left to wait for)."""
    import asyncio

    from tokensmith.api.fastpath import HotDoors
    from tokensmith.protocols import BODY_RECEIVED

    body = f"token={alice.secret}".encode()
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    slow_then_fast("introspection", lambda: client.post("/v1/oauth2/introspect", headers={**admin.headers, **form},
                                                        content=body))  # the caller is cached now
    before = fast_answers("introspection")

    async def run() -> list[dict]:
        sent: list[dict] = []

        async def receive() -> dict:
            await asyncio.sleep(0.2)  # longer than the deadline below: only no deadline lets it through
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/v1/oauth2/introspect", "scheme": "http",
                 "headers": [(b"content-length", str(len(body)).encode()),
                             (b"content-type", b"application/x-www-form-urlencoded"),
                             (b"authorization", f"Bearer {admin.secret}".encode())],
                 "client": ("testclient", 50000), "app": app,  # the address the client above used
                 "extensions": {BODY_RECEIVED: lambda: True}}
        await HotDoors(app, body_timeout=0.05)(scope, receive, send)
        return sent

    sent = asyncio.run(run())
    assert fast_answers("introspection") == before + 1
    assert sent[0]["status"] == 200 and b'"active":true' in sent[1]["body"].replace(b" ", b"")


# --- S3 SigV4 verify -------------------------------------------------------------------------


@pytest.fixture
def access_key(client, alice, clock) -> dict:
    clock.set(datetime.now(UTC))  # botocore signs with the real time
    response = client.post("/v1/object-storage/access-keys", json={"durationSeconds": 3600, "attributes": {}},
                           headers=alice.headers)
    assert response.status_code == 201, response.text
    return response.json()


def s3_verify(client, gateway, payload: dict, **headers: str):
    return client.post("/v1/object-storage/verify", content=json.dumps(payload),
                       headers={**gateway.headers, "Content-Type": "application/json", **headers})


@pytest.mark.parametrize("how", ["header-signed", "presigned"])
def test_a_verify_from_the_fast_path_is_the_routes_answer(client, admin, access_key, how):
    sign = signed if how == "header-signed" else presigned
    payload = sign("GET", "/bucket/object", access_key["accessKeyId"], access_key["secretKey"])
    slow, fast = slow_then_fast("s3-verify", lambda: s3_verify(client, admin, payload))
    assert answer(fast) == answer(slow)
    assert fast.json() == {"valid": True, "accessKeyId": access_key["accessKeyId"], "user": "alice",
                           "org": "default"}


def test_a_wrong_signature_from_the_fast_path_is_the_routes_answer_when_no_client_is_named(client, admin,
                                                                                          access_key):
    forged = signed("GET", "/bucket/object", access_key["accessKeyId"], "x" * 40)
    slow, fast = slow_then_fast("s3-verify", lambda: s3_verify(client, admin, forged))
    assert answer(fast) == answer(slow) and fast.json()["valid"] is False


def test_a_wrong_signature_for_a_named_client_takes_the_route_which_counts_it(client, admin, access_key):
    good = signed("GET", "/bucket/object", access_key["accessKeyId"], access_key["secretKey"])
    slow_then_fast("s3-verify", lambda: s3_verify(client, admin, good, **{"Tokensmith-Client-Address": "192.0.2.1"}))
    forged = signed("GET", "/bucket/object", access_key["accessKeyId"], "x" * 40)
    before, invalid = fast_answers("s3-verify"), metrics.REGISTRY.get_sample_value(
        "tokensmith_verifications_total", {"door": "s3-verify", "outcome": "invalid"}) or 0.0
    assert s3_verify(client, admin, forged, **{"Tokensmith-Client-Address": "192.0.2.1"}).json()["valid"] is False
    assert fast_answers("s3-verify") == before
    assert metrics.REGISTRY.get_sample_value("tokensmith_verifications_total",
                                             {"door": "s3-verify", "outcome": "invalid"}) == invalid + 1


def test_a_deleted_access_key_is_refused_from_the_next_verify_on(client, admin, alice, access_key):
    payload = signed("GET", "/bucket/object", access_key["accessKeyId"], access_key["secretKey"])
    slow_then_fast("s3-verify", lambda: s3_verify(client, admin, payload))
    deleted = client.delete(f"/v1/object-storage/access-keys/{access_key['accessKeyId']}", headers=alice.headers)
    assert deleted.status_code == 204
    assert s3_verify(client, admin, payload).json()["valid"] is False


def test_a_verify_request_that_is_not_valid_is_the_routes_422(client, admin, access_key):
    payload = signed("GET", "/bucket/object", access_key["accessKeyId"], access_key["secretKey"])
    slow_then_fast("s3-verify", lambda: s3_verify(client, admin, payload))
    assert s3_verify(client, admin, {**payload, "unexpected": 1}).status_code == 422


def test_a_body_over_the_operators_lower_limit_is_the_body_limits_413_not_a_fast_answer(database, clock, tmp_path,
                                                                                        make_account):
    admin = make_account("root", admin=True)
    subject = make_account("sam")
    settings = Settings(tmp_path / "data", database.url, max_body_bytes=100)
    with TestClient(create_app(settings, database, SECRET_KEY, clock)) as small:
        slow_then_fast("introspection", lambda: small.post(  # a body under the limit: cached, then fast
            "/v1/oauth2/introspect", content=f"token={subject.secret}", headers={**admin.headers, **FORM}))
        body = f"token={subject.secret}&token_type_hint=" + "x" * 100
        response = small.post("/v1/oauth2/introspect", content=body, headers={**admin.headers, **FORM})
        assert response.status_code == 413
