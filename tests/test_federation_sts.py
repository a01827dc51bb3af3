"""The STS door: boto3's own AssumeRoleWithWebIdentity provider, configured only by environment variables,
gets temporary S3 keys that verify at /v1/object-storage/verify and stop verifying after their lifetime."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import botocore.auth
import httpx
import pytest
import uvicorn
from botocore import UNSIGNED
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from tests.conftest import LOOPBACK_NETWORKS
from tests.oidc import OidcIssuer
from tests.s3sign import _describe
from tests.servers import free_port
from tokensmith.config import Settings
from tokensmith.net.outbound import parse_networks

ROLE = "arn:tokensmith:iam::default:role/s3-writer"


@pytest.fixture
def settings(tmp_path: Path, database) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=database.url,
                    webhook_allowed_networks=parse_networks(LOOPBACK_NETWORKS), allow_loopback_http_issuers=True)


@pytest.fixture
def live_url(app, clock) -> Iterator[str]:
    clock.set(datetime.now(UTC).replace(microsecond=0))  # SDKs sign with the real time
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture(autouse=True)
def quiet_botocore():
    # botocore logs every response body at DEBUG in the *client*, STS credentials included; the
    # suite's secret-hygiene check scans logs, and a client's own debug log is not tokensmith's to fix.
    logger = logging.getLogger("botocore")
    level = logger.level
    logger.setLevel(logging.INFO)
    yield
    logger.setLevel(level)


@pytest.fixture
def issuer():
    with OidcIssuer() as running:
        yield running


@pytest.fixture
def role(live_url, admin, issuer) -> str:
    with httpx.Client(base_url=live_url, headers=admin.headers) as api:
        assert api.post("/v1/service-accounts", json={"name": "uploader"}).status_code == 201
        response = api.post("/v1/trust-policies", json={
            "name": "s3-writer", "service_account": "uploader", "issuer": issuer.url, "audience": "sts.tokensmith",
            "subject": "system:serviceaccount:ci:*", "scopes": ["object-storage:write"]})
        assert response.status_code == 201, response.text
        assert response.json()["role_arn"] == ROLE
    return ROLE


@pytest.fixture
def aws_env(monkeypatch, tmp_path, live_url) -> Path:
    """Only environment variables, as in a pod or a CI job: no config files, no other credentials."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"):
        monkeypatch.delenv(name, raising=False)
    token_file = tmp_path / "web-identity-token"
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token_file))
    monkeypatch.setenv("AWS_ROLE_ARN", ROLE)
    monkeypatch.setenv("AWS_ROLE_SESSION_NAME", "ci-job")
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", f"{live_url}/v1/sts")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return token_file


def signed_put(credentials, moment: datetime) -> dict:
    """A PUT signed by botocore's SigV4 signer at ``moment`` (the server's clock), described for /verify."""
    request = AWSRequest(method="PUT", url="http://127.0.0.1:9000/bucket/key", data=b"hello",
                         headers={"Content-Type": "text/plain"})
    original = botocore.auth.get_current_datetime
    botocore.auth.get_current_datetime = lambda *a, **k: moment.astimezone(UTC).replace(tzinfo=None)
    try:
        S3SigV4Auth(Credentials(credentials.access_key, credentials.secret_key, credentials.token), "s3",
                    "us-east-1").add_auth(request)
    finally:
        botocore.auth.get_current_datetime = original
    return _describe(request)


def test_boto3s_web_identity_provider_gets_s3_keys_that_verify_and_die_with_their_lifetime(
        live_url, admin, issuer, role, aws_env, clock):
    aws_env.write_text(issuer.token(clock.now().timestamp(), aud="sts.tokensmith"))
    credentials = boto3.Session().get_credentials()
    assert credentials.method == "assume-role-with-web-identity"
    frozen = credentials.get_frozen_credentials()
    with httpx.Client(base_url=live_url, headers=admin.headers) as gateway:
        verdict = gateway.post("/v1/object-storage/verify", json=signed_put(frozen, clock.now())).json()
        assert verdict["valid"] is True and verdict["accessKeyId"] == frozen.access_key
        assert verdict["user"] == "uploader"
        clock.advance(timedelta(hours=1, seconds=1))  # the policy's default lifetime, and a second
        verdict = gateway.post("/v1/object-storage/verify", json=signed_put(frozen, clock.now())).json()
        assert verdict == {"valid": False, "reason": "access key expired"}


def sts_client(live_url: str):
    return boto3.client("sts", endpoint_url=f"{live_url}/v1/sts", region_name="us-east-1",
                        aws_access_key_id="unused", aws_secret_access_key="unused",
                        config=Config(signature_version=UNSIGNED, retries={"max_attempts": 1}))


def error_of(live_url: str, token: str, role_arn: str = ROLE, **extra) -> tuple[str, str]:
    with pytest.raises(ClientError) as failure:
        sts_client(live_url).assume_role_with_web_identity(RoleArn=role_arn, RoleSessionName="s1",
                                                           WebIdentityToken=token, **extra)
    error = failure.value.response["Error"]
    return error["Code"], error["Message"]


def test_a_direct_sts_call_answers_the_documented_xml(live_url, issuer, role, clock):
    answer = sts_client(live_url).assume_role_with_web_identity(
        RoleArn=role, RoleSessionName="build-42", DurationSeconds=900,
        WebIdentityToken=issuer.token(clock.now().timestamp(), aud="sts.tokensmith"))
    assert answer["Credentials"]["AccessKeyId"] and answer["Credentials"]["SecretAccessKey"]
    assert answer["Credentials"]["Expiration"] == clock.now() + timedelta(seconds=900)
    assert answer["SubjectFromWebIdentityToken"] == "system:serviceaccount:ci:deployer"
    assert answer["AssumedRoleUser"]["Arn"] == "arn:tokensmith:sts::default:assumed-role/s3-writer/build-42"
    assert answer["Audience"] == "sts.tokensmith" and answer["Provider"] == issuer.url


def test_sts_refusals_are_sts_errors_that_boto3_reads(live_url, issuer, role, clock):
    now = clock.now().timestamp()
    code, message = error_of(live_url, issuer.token(now, aud="other"))
    assert code == "InvalidIdentityToken" and message.startswith("audience")
    code, message = error_of(live_url, issuer.token(now, aud="sts.tokensmith", sub="system:serviceaccount:prod:x"))
    assert code == "AccessDenied" and "condition sub" in message
    assert error_of(live_url, issuer.token(now - 7200, aud="sts.tokensmith", exp=int(now) - 3600))[0] == (
        "ExpiredTokenException")
    assert error_of(live_url, "garbage")[0] == "InvalidIdentityToken"
    assert error_of(live_url, issuer.token(now, aud="sts.tokensmith"),
                    role_arn="arn:tokensmith:iam::default:role/nope")[0] == "AccessDenied"


def test_a_duration_longer_than_the_policy_allows_is_a_validation_error(live_url, issuer, role, clock):
    token = issuer.token(clock.now().timestamp(), aud="sts.tokensmith")
    assert error_of(live_url, token, DurationSeconds=7200)[0] == "ValidationError"
