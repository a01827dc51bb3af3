"""Object storage against hostile tenants and tampering gateways' clients (issue 13):
organization isolation of /verify, unsigned x-amz-* headers, permanent keys under the policy,
and the SigV2 presigned URLs common tools make by default.

Requests are signed by botocore itself (a real client); the clock is set to the real time because
botocore signs with it.
"""

from __future__ import annotations

from datetime import UTC, datetime

import boto3
import pytest
from botocore.config import Config

from tests.s3sign import ENDPOINT, presigned, signed
from tests.test_console_access_keys import create_key, csrf_of

VERIFY = "/v1/object-storage/verify"
KEYS = "/v1/object-storage/access-keys"
POLICY = "/v1/org/policy"
BODY = b"an object body"


@pytest.fixture(autouse=True)
def real_time(clock):
    clock.set(datetime.now(UTC))
    return clock


def mint(client, account, duration: int = 0) -> dict:
    response = client.post(KEYS, json={"durationSeconds": duration}, headers=account.headers)
    assert response.status_code == 201, response.text
    return response.json()


def verify(client, gateway, payload: dict, **headers: str):
    return client.post(VERIFY, json=payload, headers={**gateway.headers, **headers})


def put(key: dict, headers: dict[str, str] | None = None) -> dict:
    return signed("PUT", "/bucket/report.pdf", key["accessKeyId"], key["secretKey"], body=BODY,
                  headers=headers or {"Content-Type": "application/pdf"})


def with_headers(payload: dict, **extra: str) -> dict:
    return {**payload, "headers": {**payload["headers"], **{k.replace("_", "-"): v for k, v in extra.items()}}}


# --- /verify answers for the caller's organization only -----------------------------------------


def test_another_organizations_key_is_answered_exactly_like_a_made_up_key(client, admin, mallory):
    # mallory, admin of evil-corp, probes a genuine request signed with a key of admin's organization.
    ours = mint(client, admin)
    genuine = put(ours)
    made_up = put({"accessKeyId": "TSMP" + "Q" * 16, "secretKey": ours["secretKey"]})
    probe = verify(client, mallory, genuine, **{"Tokensmith-Client-Address": "192.0.2.7"})
    control = verify(client, mallory, made_up, **{"Tokensmith-Client-Address": "192.0.2.8"})
    assert (probe.status_code, probe.json()) == (control.status_code, control.json())
    assert probe.json() == {"valid": False, "reason": "unknown access key"}
    assert sorted(probe.headers.keys()) == sorted(control.headers.keys())
    assert "admin" not in probe.text and ours["accessKeyId"] not in probe.text


def test_the_owning_organizations_gateway_still_verifies_the_key(client, admin, mallory):
    ours = mint(client, admin)
    assert verify(client, admin, put(ours)).json()["valid"] is True


def test_a_probe_with_another_organizations_key_counts_against_the_named_client(client, admin, mallory):
    # Same failure accounting as a made-up key: over the limit the client is refused, not told more.
    ours = mint(client, admin)
    genuine = put(ours)
    answers = [verify(client, mallory, genuine, **{"Tokensmith-Client-Address": "192.0.2.9"}).json()
               for _ in range(40)]
    assert answers[0] == {"valid": False, "reason": "unknown access key"}
    assert answers[-1] == {"valid": False, "reason": "rate limited"}


# --- unsigned x-amz-* headers -------------------------------------------------------------------


@pytest.mark.parametrize(("name", "value"), [("X-Amz-Acl", "public-read"),
                                             ("X-Amz-Copy-Source", "/other-bucket/secret.pdf")])
def test_an_x_amz_header_added_after_signing_is_refused(client, admin, name, value):
    key = mint(client, admin)
    answer = verify(client, admin, with_headers(put(key), **{name: value}))
    assert answer.json() == {"valid": False, "reason": "x-amz-* header not signed"}


def test_an_x_amz_header_added_to_a_presigned_url_is_refused(client, admin):
    key = mint(client, admin)
    payload = presigned("PUT", "/bucket/report.pdf", key["accessKeyId"], key["secretKey"])
    assert verify(client, admin, payload).json()["valid"] is True
    tampered = with_headers(payload, **{"x-amz-acl": "public-read"})
    assert verify(client, admin, tampered).json() == {"valid": False, "reason": "x-amz-* header not signed"}


def test_a_signed_x_amz_acl_header_verifies(client, admin):
    key = mint(client, admin)
    payload = put(key, {"Content-Type": "application/pdf", "x-amz-acl": "public-read"})
    assert "x-amz-acl" in payload["headers"]["Authorization"]
    assert verify(client, admin, payload).json()["valid"] is True


def test_other_unsigned_headers_do_not_matter(client, admin):
    key = mint(client, admin)
    answer = verify(client, admin, with_headers(put(key), **{"User-Agent": "curl/8", "X-Forwarded-For": "1.2.3.4"}))
    assert answer.json()["valid"] is True


# --- permanent keys and the organization policy -----------------------------------------------


def set_policy(client, admin, **fields) -> None:
    body = {"max_lifetime_days": None, "allow_never": True, "default_expiration": "30d", **fields}
    response = client.put(POLICY, json=body, headers=admin.headers)
    assert response.status_code == 200, response.text


def test_a_policy_that_forbids_never_refuses_a_permanent_key_stating_the_policy(client, admin, alice):
    set_policy(client, admin, allow_never=False)
    response = client.post(KEYS, json={"durationSeconds": 0}, headers=alice.headers)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "permanent access key" in detail and "'never' not allowed" in detail
    assert client.get(KEYS, headers=alice.headers).json()["items"] == []


def test_a_policy_with_a_maximum_lifetime_refuses_a_permanent_key(client, admin, alice):
    set_policy(client, admin, max_lifetime_days=90)
    response = client.post(KEYS, json={"durationSeconds": 0}, headers=alice.headers)
    assert response.status_code == 422
    assert "at most 90 days" in response.json()["detail"]


def test_a_policy_that_forbids_never_still_allows_temporary_keys_capped_by_the_token(client, admin, alice):
    set_policy(client, admin, allow_never=False)
    assert mint(client, alice, 3600)["expiry"] is not None


def test_the_default_policy_allows_permanent_keys(client, alice):
    assert mint(client, alice, 0)["expiry"] is None


# --- SigV2 presigned URLs: a 422 that says how to fix it -------------------------------------


def test_boto3s_default_presigned_url_is_sigv2_and_the_422_names_the_s3v4_setting(client, admin):
    key = mint(client, admin)
    s3 = boto3.client("s3", endpoint_url=ENDPOINT, region_name="us-east-1", aws_access_key_id=key["accessKeyId"],
                      aws_secret_access_key=key["secretKey"], config=Config(s3={"addressing_style": "path"}))
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "bucket", "Key": "report.pdf"})
    assert "AWSAccessKeyId=" in url  # boto3's default for this endpoint is SigV2 (the premise)
    path, _, query = url.removeprefix(ENDPOINT).partition("?")
    response = verify(client, admin, {"method": "GET", "path": path, "query": query,
                                      "headers": {"Host": "127.0.0.1:9000"}})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "Signature Version 2" in detail and "signature_version='s3v4'" in detail


def test_boto3s_s3v4_presigned_url_verifies(client, admin):
    key = mint(client, admin)
    s3 = boto3.client("s3", endpoint_url=ENDPOINT, region_name="us-east-1", aws_access_key_id=key["accessKeyId"],
                      aws_secret_access_key=key["secretKey"],
                      config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "bucket", "Key": "report.pdf"})
    path, _, query = url.removeprefix(ENDPOINT).partition("?")
    response = verify(client, admin, {"method": "GET", "path": path, "query": query,
                                      "headers": {"Host": "127.0.0.1:9000"}})
    assert response.json()["valid"] is True


def test_a_sigv2_authorization_header_gets_a_422_naming_s3v4(client, admin):
    response = verify(client, admin, {"method": "GET", "path": "/bucket/report.pdf", "query": "",
                                      "headers": {"Host": "127.0.0.1:9000", "Date": "Wed, 02 Dec 2026 00:00:00 GMT",
                                                  "Authorization": "AWS TSMPAAAAAAAAAAAAAAAA:c2lnbmF0dXJl"}})
    assert response.status_code == 422
    assert "s3v4" in response.json()["detail"]


def test_the_console_refuses_a_permanent_key_under_such_a_policy_on_the_form(client, console, admin, alice):
    set_policy(client, admin, allow_never=False)
    console(alice.user)
    response = create_key(client, csrf_of(client), kind="permanent", lifetime="")
    assert response.status_code == 422
    assert "permanent access key" in response.text and "&#39;never&#39; not allowed" in response.text
    assert client.get(KEYS, headers=alice.headers).json()["items"] == []
