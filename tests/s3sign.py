"""Sign S3 requests with botocore's own SigV4 signer and describe them as a gateway would to /verify."""

from __future__ import annotations

from urllib.parse import urlsplit

from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

ENDPOINT = "http://127.0.0.1:9000"


def _describe(request: AWSRequest) -> dict:
    prepared = request.prepare()
    url = urlsplit(prepared.url)
    headers = {k: v if isinstance(v, str) else v.decode() for k, v in prepared.headers.items()}
    headers["Host"] = url.netloc  # what the gateway received (botocore signs it but requests adds it)
    return {"method": prepared.method, "path": url.path, "query": url.query, "headers": headers}


def signed(method: str, path_and_query: str, access_key_id: str, secret_key: str, *, body: bytes = b"",
           headers: dict[str, str] | None = None, region: str = "us-east-1") -> dict:
    """A header-signed request (Authorization: AWS4-HMAC-SHA256 ...), as /verify wants it."""
    request = AWSRequest(method=method, url=ENDPOINT + path_and_query, data=body, headers=headers or {})
    S3SigV4Auth(Credentials(access_key_id, secret_key), "s3", region).add_auth(request)
    return _describe(request)


def presigned(method: str, path_and_query: str, access_key_id: str, secret_key: str, *, expires: int = 300,
              region: str = "us-east-1") -> dict:
    """A presigned URL (query-string auth), as /verify wants it."""
    request = AWSRequest(method=method, url=ENDPOINT + path_and_query)
    S3SigV4QueryAuth(Credentials(access_key_id, secret_key), "s3", region, expires=expires).add_auth(request)
    return _describe(request)
