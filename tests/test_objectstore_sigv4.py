"""POST /v1/object-storage/verify: botocore-signed requests verify; any tampering does not.

Requests are signed by botocore's own SigV4 signer (real client), then described to tokensmith
the way an S3 gateway would. The clock is set to the real time because botocore signs with it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from tests.s3sign import presigned, signed
from tokensmith import scopes
from tokensmith.tokens.service import TokenService

VERIFY = "/v1/object-storage/verify"
KEYS = "/v1/object-storage/access-keys"
BODY = b"hello world, this is an object body"


@pytest.fixture(autouse=True)
def real_time(clock):
    clock.set(datetime.now(UTC))
    return clock


@dataclass
class World:
    client: object
    clock: object
    gateway: dict
    alice_headers: dict
    alice_token_id: str
    permanent: dict  # {"accessKeyId", "secretKey", ...}
    temporary: dict

    def mint(self, duration: int, headers: dict | None = None) -> dict:
        response = self.client.post(KEYS, json={"durationSeconds": duration, "attributes": {"name": "k"}},
                                    headers=headers or self.alice_headers)
        assert response.status_code == 201, response.text
        return response.json()

    def verify(self, payload: dict) -> dict:
        response = self.client.post(VERIFY, json=payload, headers=self.gateway)
        assert response.status_code == 200, response.text
        return response.json()

    def warm(self) -> None:
        """Verify one request of each key, so both are answered from memory afterwards
        (objectstore/keycache.py): a case then shows the cached answer equals the uncached one."""
        for key in (self.permanent, self.temporary):
            assert self.verify(put_with_body(self, key))["valid"] is True


# Every answer is checked twice: with the key read from the database, and answered from the cache.
CACHE = pytest.mark.parametrize("cache", ["cold", "warm"])


@pytest.fixture
def world(client, clock, admin, alice) -> World:
    w = World(client, clock, admin.headers, alice.headers, alice.token_id, {}, {})
    w.permanent = w.mint(0)
    w.temporary = w.mint(3600)
    return w


def put_with_body(w: World, key: dict | None = None) -> dict:
    key = key or w.permanent
    return signed("PUT", "/bucket/photos/2026/cat%20picture.jpg", key["accessKeyId"], key["secretKey"], body=BODY,
                  headers={"Content-Type": "image/jpeg"})


def get_with_query(w: World, key: dict | None = None) -> dict:
    key = key or w.permanent
    return signed("GET", "/bucket?list-type=2&prefix=photos%2F2026&max-keys=100", key["accessKeyId"],
                  key["secretKey"])


def presigned_get(w: World, key: dict | None = None, expires: int = 300) -> dict:
    key = key or w.permanent
    return presigned("GET", "/bucket/report.pdf", key["accessKeyId"], key["secretKey"], expires=expires)


def change_one_byte(text: str) -> str:
    last = text[-1]
    return text[:-1] + ("0" if last != "0" else "1")


def with_header(payload: dict, name: str, change: Callable[[str], str]) -> dict:
    headers = dict(payload["headers"])
    actual = next(k for k in headers if k.lower() == name)
    headers[actual] = change(headers[actual])
    return {**payload, "headers": headers}


def case_presign_used_just_in_time(w):
    p = presigned_get(w, expires=60)
    w.clock.advance(timedelta(seconds=59))
    return p


def case_changed_path(w):
    p = put_with_body(w)
    return {**p, "path": p["path"].replace("cat", "cot")}


def case_changed_query(w):
    p = get_with_query(w)
    return {**p, "query": p["query"].replace("max-keys=100", "max-keys=101")}


def case_changed_header(w):
    return with_header(put_with_body(w), "content-type", lambda v: v.replace("jpeg", "jpeh"))


def case_changed_body_hash(w):
    return with_header(put_with_body(w), "x-amz-content-sha256", change_one_byte)


def case_changed_date(w):
    return with_header(put_with_body(w), "x-amz-date", lambda v: v[:-2] + ("0Z" if v[-2] != "0" else "1Z"))


def case_changed_presigned_path(w):
    p = presigned_get(w)
    return {**p, "path": "/bucket/report.pdg"}


def case_expired_presign(w):
    p = presigned_get(w, expires=60)
    w.clock.set(datetime.now(UTC))  # botocore signed with the real time, maybe seconds after setup
    w.clock.advance(timedelta(seconds=61))
    return p


def case_request_too_old(w):
    p = put_with_body(w)
    w.clock.set(datetime.now(UTC))
    w.clock.advance(timedelta(minutes=15, seconds=1))
    return p


def case_request_from_the_future(w):
    p = put_with_body(w)
    w.clock.set(datetime.now(UTC))
    w.clock.advance(timedelta(minutes=-16))
    return p


def case_revoked_key(w):
    p = put_with_body(w)
    assert w.client.delete(f"{KEYS}/{w.permanent['accessKeyId']}", headers=w.alice_headers).status_code == 204
    return p


def case_deleted_token_temporary_key(w):
    p = put_with_body(w, w.temporary)
    assert w.client.delete(f"/v1/tokens/{w.alice_token_id}", headers=w.alice_headers).status_code == 204
    return p


def case_expired_temporary_key(w):
    p = put_with_body(w, w.temporary)
    w.clock.advance(timedelta(seconds=3600))
    return p


def case_wrong_secret(w):
    return put_with_body(w, {**w.permanent, "secretKey": change_one_byte(w.permanent["secretKey"])})


def case_unknown_key(w):
    return put_with_body(w, {**w.permanent, "accessKeyId": "TSMP" + "A" * 16})


def case_garbage_key_id(w):
    return put_with_body(w, {**w.permanent, "accessKeyId": "akia';DROP-TABLE--"})


def case_body_differs_from_signed_hash(w):
    return {**put_with_body(w), "bodySha256": hashlib.sha256(BODY + b"!").hexdigest()}


VALID = {
    "PUT with a body": put_with_body,
    "GET with a query string": get_with_query,
    "presigned GET": presigned_get,
    "PUT with a temporary key": lambda w: put_with_body(w, w.temporary),
    "PUT with the body hash the gateway computed": lambda w: {**put_with_body(w),
                                                              "bodySha256": hashlib.sha256(BODY).hexdigest()},
    "presigned GET just before expiry": lambda w: case_presign_used_just_in_time(w),
}

INVALID = {
    "one byte changed in the path": (case_changed_path, "signature mismatch"),
    "one byte changed in the query": (case_changed_query, "signature mismatch"),
    "one byte changed in a signed header": (case_changed_header, "signature mismatch"),
    "one byte changed in the body hash": (case_changed_body_hash, "signature mismatch"),
    "one byte changed in the date": (case_changed_date, "signature mismatch"),
    "one byte changed in a presigned path": (case_changed_presigned_path, "signature mismatch"),
    "expired presigned URL": (case_expired_presign, "presigned URL expired"),
    "request older than 15 minutes": (case_request_too_old, "request too old"),
    "request more than 15 minutes ahead": (case_request_from_the_future, "request time is too far in the future"),
    "revoked key": (case_revoked_key, "access key revoked"),
    "temporary key of a deleted token": (case_deleted_token_temporary_key, "access key revoked"),
    "expired temporary key": (case_expired_temporary_key, "access key expired"),
    "wrong secret": (case_wrong_secret, "signature mismatch"),
    "unknown access key": (case_unknown_key, "unknown access key"),
    "access key id that is not ours": (case_garbage_key_id, "unknown access key"),
    "body differs from the signed hash": (case_body_differs_from_signed_hash, "payload hash mismatch"),
}


@CACHE
@pytest.mark.parametrize("build", VALID.values(), ids=VALID.keys())
def test_genuine_request_verifies(world, build, cache):
    if cache == "warm":
        world.warm()
    payload = build(world)
    used = next(k["accessKeyId"] for k in (world.permanent, world.temporary) if k["accessKeyId"] in str(payload))
    assert world.verify(payload) == {"valid": True, "accessKeyId": used, "user": "alice", "org": "default"}


@CACHE
@pytest.mark.parametrize(("build", "reason"), INVALID.values(), ids=INVALID.keys())
def test_tampered_or_dead_request_is_invalid(world, build, reason, cache):
    if cache == "warm":
        world.warm()
    answer = world.verify(build(world))
    assert answer == {"valid": False, "reason": reason}
    assert world.permanent["secretKey"] not in str(answer)


@CACHE
def test_permanent_key_survives_deleting_its_token(world, cache):
    if cache == "warm":
        world.warm()
    payload = put_with_body(world)
    assert world.client.delete(f"/v1/tokens/{world.alice_token_id}", headers=world.alice_headers).status_code == 204
    assert world.verify(payload)["valid"] is True


# --- malformed verify requests: 4xx, never 500 -------------------------------------------------


def drop_header(name):
    def change(w):
        p = put_with_body(w)
        return {**p, "headers": {k: v for k, v in p["headers"].items() if k.lower() != name}}
    return change


def drop_query_param(name):
    def change(w):
        p = presigned_get(w)
        return {**p, "query": "&".join(q for q in p["query"].split("&") if not q.startswith(name + "="))}
    return change


def set_query_param(name, value):
    def change(w):
        p = presigned_get(w)
        return {**p, "query": "&".join(f"{name}={value}" if q.startswith(name + "=") else q
                                       for q in p["query"].split("&"))}
    return change


MALFORMED = {
    "no Authorization and no presigned parameters": drop_header("authorization"),
    "missing X-Amz-Date": drop_header("x-amz-date"),
    "missing X-Amz-Content-Sha256": drop_header("x-amz-content-sha256"),
    "missing a signed header (Host)": drop_header("host"),
    "Authorization without a signature": lambda w: with_header(put_with_body(w), "authorization",
                                                               lambda v: v.split(", Signature=")[0]),
    "Authorization with another algorithm": lambda w: with_header(put_with_body(w), "authorization",
                                                                  lambda v: v.replace("AWS4-HMAC-SHA256", "AWS3")),
    "Authorization with a short credential": lambda w: with_header(
        put_with_body(w), "authorization", lambda v: v.replace("/aws4_request", "")),
    "unparseable X-Amz-Date": lambda w: with_header(put_with_body(w), "x-amz-date", lambda v: "yesterday"),
    "presigned URL without X-Amz-Expires": drop_query_param("X-Amz-Expires"),
    "presigned X-Amz-Expires beyond 7 days": set_query_param("X-Amz-Expires", "604801"),
    "presigned X-Amz-Expires not a number": set_query_param("X-Amz-Expires", "soon"),
    "lower-case method": lambda w: {**put_with_body(w), "method": "put"},
    "path without a leading slash": lambda w: {**put_with_body(w), "path": "bucket/key"},
    "header value not a string": lambda w: {**put_with_body(w), "headers": {"Host": 5}},
    "headers missing": lambda w: {"method": "GET", "path": "/"},
    "unknown field": lambda w: {**put_with_body(w), "body": "..."},
    "invalid percent-encoding in query": lambda w: {**get_with_query(w), "query": "prefix=%ff%fe"},
}


@pytest.mark.parametrize("build", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_verify_request_is_a_clear_4xx(world, build):
    response = world.client.post(VERIFY, json=build(world), headers=world.gateway)
    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["detail"]


def test_verify_body_that_is_not_json_is_400(world):
    response = world.client.post(VERIFY, content=b"{nope", headers={**world.gateway,
                                                                     "Content-Type": "application/json"})
    assert response.status_code == 400


# --- who may verify ----------------------------------------------------------------------------


def test_member_token_cannot_verify(world):
    response = world.client.post(VERIFY, json=put_with_body(world), headers=world.alice_headers)
    assert response.status_code == 403
    assert "object-storage:verify" in response.json()["detail"]


def test_unauthenticated_verify_is_401(world):
    assert world.client.post(VERIFY, json=put_with_body(world)).status_code == 401


def test_service_token_granted_verify_can_verify(world, database, clock, make_account):
    gateway = make_account("s3-gateway")
    with database.session() as session:
        token = TokenService(session, clock, b"test-secret-key-0123456789abcdef-0123456789").create(
            gateway.user, "gateway", scopes=sorted(scopes.default_scopes(False) | {"object-storage:verify"}),
            grant_service_scopes=True,
        )
    response = world.client.post(VERIFY, json=put_with_body(world),
                                 headers={"Authorization": f"Bearer {token.secret}"})
    assert response.status_code == 200
    assert response.json()["valid"] is True


def test_keys_of_another_organization_verify_only_for_that_organizations_gateway(world, make_account):
    eve = make_account("eve", org="other-org")
    other_gateway = make_account("other-gateway", org="other-org", admin=True)
    key = world.mint(0, headers=eve.headers)
    payload = put_with_body(world, key)
    assert world.verify(payload) == {"valid": False, "reason": "unknown access key"}
    response = world.client.post(VERIFY, json=payload, headers=other_gateway.headers)
    assert response.json() == {"valid": True, "accessKeyId": key["accessKeyId"], "user": "eve", "org": "other-org"}
