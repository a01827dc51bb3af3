"""Signed aws-chunked uploads (STREAMING-AWS4-HMAC-SHA256-PAYLOAD), with a real client: restic.

The test runs a tiny S3 endpoint of its own on loopback (an in-memory bucket). Like a real gateway
it describes every request to ``POST /v1/object-storage/verify``; for a streaming upload it then
checks every chunk with the signing key tokensmith returned (``sigv4.decode_signed_chunks``).
restic signs each PUT over plain HTTP with chunk signatures, so ``restic init`` and ``restic
backup`` only succeed if the whole chain verifies; a captured upload replayed with another body is
refused.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import ssl
import subprocess
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit
from xml.sax.saxutils import escape

import boto3
import pytest
from botocore.config import Config

from tests.conftest import require
from tests.pki import make_pki
from tests.s3sign import signed
from tokensmith.objectstore import sigv4

pytestmark = pytest.mark.restic
RESTIC = shutil.which("restic") or "/usr/bin/restic"
VERIFY = "/v1/object-storage/verify"
KEYS = "/v1/object-storage/access-keys"
BUCKET = "backups"
UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"


@pytest.fixture(autouse=True)
def real_time(clock):
    # restic and botocore sign with the real time; tokensmith's clock must agree (15 minutes).
    clock.set(datetime.now(UTC))
    return clock


@dataclass
class Captured:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Gateway:
    """What a gateway does per request: ask tokensmith, then check the chunks itself."""

    client: object
    headers: dict[str, str]
    lock: threading.Lock = field(default_factory=threading.Lock)
    objects: dict[str, bytes] = field(default_factory=dict)
    captured: list[Captured] = field(default_factory=list)
    verdicts: list[str] = field(default_factory=list)

    def ask(self, request: Captured) -> dict:
        payload = {"method": request.method, "path": request.path, "query": request.query,
                   "headers": request.headers}
        with self.lock:  # one TestClient, many handler threads
            response = self.client.post(VERIFY, json=payload, headers=self.headers)
        assert response.status_code == 200, response.text
        return response.json()

    def admit(self, request: Captured) -> tuple[bool, bytes, str]:
        """(allowed, decoded body, why): the whole gateway check."""
        answer = self.ask(request)
        if not answer["valid"]:
            return False, b"", answer["reason"]
        payload_hash = {k.lower(): v for k, v in request.headers.items()}.get("x-amz-content-sha256", "")
        if payload_hash in sigv4.SIGNED_CHUNK_PAYLOADS:
            streaming = answer["streaming"]
            try:
                body = sigv4.decode_signed_chunks(
                    request.body, bytes.fromhex(streaming["signingKey"]), streaming["amzDate"], streaming["scope"],
                    streaming["seedSignature"], trailer=payload_hash == sigv4.STREAMING_SIGNED_PAYLOAD_TRAILER)
            except sigv4.ChunkError as error:
                return False, b"", str(error)
            return True, body, "chunks verified"
        assert "streaming" not in answer
        if payload_hash == UNSIGNED_TRAILER:
            try:
                return True, decode_unsigned_chunks(request.body), "unsigned chunks with a good checksum"
            except ValueError as error:
                return False, b"", str(error)
        if payload_hash != sigv4.UNSIGNED_PAYLOAD and hashlib.sha256(request.body).hexdigest() != payload_hash:
            return False, b"", "payload hash mismatch"
        return True, request.body, "signed payload"


def decode_unsigned_chunks(body: bytes) -> bytes:
    """An unsigned aws-chunked body (botocore over TLS) whose trailing x-amz-checksum-crc32 matches."""
    out, pos = bytearray(), 0
    while True:
        end = body.index(b"\r\n", pos)
        size, pos = int(body[pos:end], 16), end + 2
        if size == 0:
            break
        out += body[pos : pos + size]
        pos += size + 2
    trailer = dict(line.split(":", 1) for line in body[pos:].decode().split("\r\n") if line)
    if base64.b64decode(trailer["x-amz-checksum-crc32"]) != zlib.crc32(out).to_bytes(4, "big"):
        raise ValueError("checksum mismatch")
    return bytes(out)


def etag(data: bytes) -> str:
    return f'"{hashlib.md5(data).hexdigest()}"'  # S3's ETag of a simple upload is its MD5


def list_objects(objects: dict[str, bytes], query: dict[str, str]) -> bytes:
    """ListObjectsV2, enough for restic: prefix, delimiter, no paging (small repositories)."""
    prefix, delimiter = query.get("prefix", ""), query.get("delimiter", "")
    contents, prefixes = [], set()
    for key in sorted(objects):
        if not key.startswith(prefix):
            continue
        rest = key[len(prefix):]
        if delimiter and delimiter in rest:
            prefixes.add(prefix + rest.split(delimiter)[0] + delimiter)
            continue
        contents.append(f"<Contents><Key>{escape(key)}</Key><Size>{len(objects[key])}</Size>"
                        f"<LastModified>2026-12-01T00:00:00.000Z</LastModified><ETag>{etag(objects[key])}</ETag>"
                        "<StorageClass>STANDARD</StorageClass></Contents>")
    common = "".join(f"<CommonPrefixes><Prefix>{escape(p)}</Prefix></CommonPrefixes>" for p in sorted(prefixes))
    return (f'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            f"<Name>{BUCKET}</Name><Prefix>{escape(prefix)}</Prefix><KeyCount>{len(contents)}</KeyCount>"
            f"<MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated>{''.join(contents)}{common}"
            "</ListBucketResult>").encode()


def error_xml(code: str, message: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
            f"<Message>{escape(message)}</Message></Error>").encode()


def s3_handler(gateway: Gateway) -> type[BaseHTTPRequestHandler]:
    class S3(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_args: object) -> None:
            pass

        def reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            if "Content-Length" not in (headers or {}):
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def read_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""
            body = bytearray()  # HTTP/1.1 chunked transfer coding (botocore streams aws-chunked this way)
            while size := int(self.rfile.readline().split(b";")[0], 16):
                body += self.rfile.read(size)
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            return bytes(body)

        def handle_any(self) -> None:
            body = self.read_body()
            url = urlsplit(self.path)
            request = Captured(self.command, url.path, url.query, dict(self.headers.items()), body)
            gateway.captured.append(request)
            allowed, payload, why = gateway.admit(request)
            gateway.verdicts.append(why)
            if not allowed:
                self.reply(403, error_xml("AccessDenied", why), {"Content-Type": "application/xml"})
                return
            self.serve(request, payload)

        def serve(self, request: Captured, payload: bytes) -> None:
            query = dict(parse_qsl(request.query, keep_blank_values=True))
            parts = unquote(request.path).lstrip("/").split("/", 1)
            key = parts[1] if len(parts) > 1 else ""
            if parts[0] != BUCKET:
                self.reply(404, error_xml("NoSuchBucket", parts[0]), {"Content-Type": "application/xml"})
            elif not key:
                if "location" in query:
                    body = b'<?xml version="1.0" encoding="UTF-8"?><LocationConstraint xmlns="http://s3.amazonaws.com/doc/2006-03-01/"></LocationConstraint>'
                    self.reply(200, body, {"Content-Type": "application/xml"})
                elif request.method == "GET":
                    self.reply(200, list_objects(gateway.objects, query), {"Content-Type": "application/xml"})
                else:
                    self.reply(200)  # HEAD/PUT bucket: it exists
            elif request.method == "PUT":
                gateway.objects[key] = payload
                self.reply(200, headers={"ETag": etag(payload)})
            elif request.method == "DELETE":
                gateway.objects.pop(key, None)
                self.reply(204)
            elif key not in gateway.objects:
                self.reply(404, error_xml("NoSuchKey", key), {"Content-Type": "application/xml"})
            else:
                self.get(gateway.objects[key])

        def get(self, data: bytes) -> None:
            headers = {"Content-Type": "application/octet-stream", "Last-Modified": formatdate(usegmt=True),
                       "ETag": etag(data), "Accept-Ranges": "bytes"}
            ranged = self.headers.get("Range", "")
            if ranged.startswith("bytes="):
                first, _, last = ranged.removeprefix("bytes=").partition("-")
                start = int(first) if first else len(data) - int(last)
                end = int(last) if first and last else len(data) - 1
                end = min(end, len(data) - 1)
                headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
                self.reply(206, data[start : end + 1], headers)
            else:
                self.reply(200, data, headers)

        do_GET = do_PUT = do_HEAD = do_DELETE = do_POST = handle_any

    return S3


@dataclass
class World:
    gateway: Gateway
    endpoint: str
    key: dict
    root: Path


def running_world(client, admin, tmp_path: Path, tls: ssl.SSLContext | None = None) -> Iterator[World]:
    response = client.post(KEYS, json={"durationSeconds": 0, "attributes": {"name": "restic"}}, headers=admin.headers)
    assert response.status_code == 201, response.text
    gateway = Gateway(client, admin.headers)
    server = ThreadingHTTPServer(("127.0.0.1", 0), s3_handler(gateway))
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    scheme = "https" if tls is not None else "http"
    try:
        yield World(gateway, f"{scheme}://127.0.0.1:{server.server_address[1]}", response.json(), tmp_path)
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def world(client, admin, tmp_path) -> Iterator[World]:
    yield from running_world(client, admin, tmp_path)


@pytest.fixture
def tls_world(client, admin, tmp_path) -> Iterator[World]:
    pki = make_pki()
    cert, key = pki.write_server_files(tmp_path)
    (tmp_path / "ca.pem").write_text(pki.ca_pem)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    yield from running_world(client, admin, tmp_path, context)


def restic(world: World, *args: str) -> subprocess.CompletedProcess:
    require(os.path.exists(RESTIC), "the streaming-signature test needs Debian's restic (apt-get install restic)")
    home = world.root / "home"
    home.mkdir(exist_ok=True)
    # Only these credentials, nothing from the machine: no profile, no instance metadata lookups.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
           "AWS_ACCESS_KEY_ID": world.key["accessKeyId"], "AWS_SECRET_ACCESS_KEY": world.key["secretKey"],
           "RESTIC_PASSWORD": "correct horse battery staple", "RESTIC_CACHE_DIR": str(world.root / "cache")}
    repository = f"s3:{world.endpoint}/{BUCKET}/repo"
    return subprocess.run([RESTIC, "--repo", repository, "-o", "s3.region=us-east-1", "--no-lock", *args],
                          env=env, capture_output=True, text=True, timeout=120)


def restic_init(world: World) -> None:
    init = restic(world, "init")
    assert init.returncode == 0, init.stderr


def restic_backup(world: World) -> None:
    source = world.root / "source"
    source.mkdir()
    (source / "notes.txt").write_text("the quick brown fox\n" * 200)
    (source / "random.bin").write_bytes(os.urandom(300_000))
    init = restic(world, "init")
    assert init.returncode == 0, init.stderr
    backup = restic(world, "backup", str(source))
    assert backup.returncode == 0, backup.stderr


def streaming_puts(world: World) -> list[Captured]:
    return [c for c in world.gateway.captured if c.method == "PUT" and {
        k.lower(): v for k, v in c.headers.items()}.get("x-amz-content-sha256") == sigv4.STREAMING_SIGNED_PAYLOAD]


def test_restic_init_and_backup_succeed_with_every_chunk_verified(world):
    restic_backup(world)
    uploads = streaming_puts(world)
    assert uploads, "restic's PUTs over HTTP are expected to use STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
    assert all(c.path.startswith(f"/{BUCKET}/repo/") for c in uploads)
    assert "chunks verified" in world.gateway.verdicts
    assert not [v for v in world.gateway.verdicts if v not in ("chunks verified", "signed payload")]
    snapshots = restic(world, "snapshots", "--json")
    assert snapshots.returncode == 0, snapshots.stderr
    assert '"paths"' in snapshots.stdout


def flip_one_data_byte(body: bytes) -> bytes:
    first_data = body.index(b"\r\n") + 2
    return body[:first_data] + bytes([body[first_data] ^ 0x01]) + body[first_data + 1:]


def test_a_captured_upload_with_one_chunk_byte_changed_is_refused(world):
    restic_init(world)
    captured = max(streaming_puts(world), key=lambda c: len(c.body))
    replay = Captured(captured.method, captured.path, captured.query, captured.headers,
                      flip_one_data_byte(captured.body))
    assert world.gateway.ask(replay)["valid"] is True  # the seed signature alone cannot tell
    assert world.gateway.admit(replay) == (False, b"", "chunk signature mismatch")


def test_a_captured_upload_with_another_body_is_refused(world):
    restic_init(world)
    captured = streaming_puts(world)[0]
    data = b"attacker's bytes"
    forged = f"{len(data):x};chunk-signature={'0' * 64}\r\n".encode() + data + b"\r\n" + \
        f"0;chunk-signature={'0' * 64}\r\n\r\n".encode()
    replay = Captured(captured.method, captured.path, captured.query, captured.headers, forged)
    assert world.gateway.admit(replay) == (False, b"", "chunk signature mismatch")


def test_the_genuine_captured_upload_decodes_to_what_restic_stored(world):
    restic_init(world)
    captured = streaming_puts(world)[-1]
    allowed, payload, _ = world.gateway.admit(captured)
    assert allowed
    key = unquote(captured.path).removeprefix(f"/{BUCKET}/")
    assert payload == world.gateway.objects[key]
    length = {k.lower(): v for k, v in captured.headers.items()}["x-amz-decoded-content-length"]
    assert len(payload) == int(length)


def test_a_request_that_is_not_streaming_gets_no_signing_key(world):
    payload = signed("PUT", f"/{BUCKET}/object", world.key["accessKeyId"], world.key["secretKey"], body=b"x")
    answer = world.gateway.client.post(VERIFY, json=payload, headers=world.gateway.headers).json()
    assert answer["valid"] is True and "streaming" not in answer


def test_the_returned_signing_key_is_date_scoped_not_the_secret_key(world):
    restic_init(world)
    answer = world.gateway.ask(streaming_puts(world)[0])
    streaming = answer["streaming"]
    assert world.key["secretKey"] not in str(answer)
    credential = sigv4.Credential(world.key["accessKeyId"], *streaming["scope"].split("/")[:3])
    assert streaming["signingKey"] == sigv4.signing_key(world.key["secretKey"], credential).hex()
    assert streaming["scope"].endswith("/us-east-1/s3/aws4_request")


# --- botocore over TLS: STREAMING-UNSIGNED-PAYLOAD-TRAILER ----------------------------------------


def boto3_s3(world: World, monkeypatch: pytest.MonkeyPatch):
    for name in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return boto3.client("s3", endpoint_url=world.endpoint, region_name="us-east-1",
                        aws_access_key_id=world.key["accessKeyId"], aws_secret_access_key=world.key["secretKey"],
                        verify=str(world.root / "ca.pem"),
                        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))


def test_botocore_over_tls_uploads_with_an_unsigned_trailer_that_verifies(tls_world, monkeypatch):
    s3 = boto3_s3(tls_world, monkeypatch)
    s3.put_object(Bucket=BUCKET, Key="report.txt", Body=b"quarterly numbers\n" * 100)
    [put] = [c for c in tls_world.gateway.captured if c.method == "PUT"]
    assert {k.lower(): v for k, v in put.headers.items()}["x-amz-content-sha256"] == UNSIGNED_TRAILER  # premise
    assert tls_world.gateway.verdicts[-1] == "unsigned chunks with a good checksum"
    assert s3.get_object(Bucket=BUCKET, Key="report.txt")["Body"].read() == b"quarterly numbers\n" * 100


def test_an_unsigned_trailer_upload_replayed_to_another_key_is_refused(tls_world, monkeypatch):
    boto3_s3(tls_world, monkeypatch).put_object(Bucket=BUCKET, Key="report.txt", Body=b"numbers")
    [put] = [c for c in tls_world.gateway.captured if c.method == "PUT"]
    moved = Captured(put.method, put.path.replace("report.txt", "index.html"), put.query, put.headers, put.body)
    assert tls_world.gateway.ask(moved) == {"valid": False, "reason": "signature mismatch"}
