"""The S3 access key cache (objectstore/keycache.py): answers from memory, forgets at once, stays bounded.

That a cached answer equals the uncached one, case by case, is tests/test_objectstore_sigv4.py
(every case with a cold and a warm cache); a signed aws-chunked request is here.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event

from tests.conftest import SECRET_KEY
from tests.s3sign import signed
from tokensmith.api.context import AppContext
from tokensmith.config import Settings
from tokensmith.db.changes import Changes
from tokensmith.db.database import Database
from tokensmith.objectstore import sigv4
from tokensmith.objectstore.keycache import MAX_SCOPES_PER_KEY, AccessKeyCache, KeyFacts
from tokensmith.objectstore.service import AccessKeyService
from tokensmith.objectstore.verdict import KeyOwner
from tokensmith.refresher import Refresher

VERIFY = "/v1/object-storage/verify"
KEYS = "/v1/object-storage/access-keys"


@pytest.fixture(autouse=True)
def real_time(clock):
    clock.set(datetime.now(UTC))  # botocore signs with the real time
    return clock


@pytest.fixture
def key(client, alice) -> dict:
    response = client.post(KEYS, json={"durationSeconds": 3600, "attributes": {"name": "k"}}, headers=alice.headers)
    assert response.status_code == 201, response.text
    return response.json()


def get(key: dict, region: str = "us-east-1") -> dict:
    return signed("GET", "/bucket/object", key["accessKeyId"], key["secretKey"], region=region)


def verify(client, admin, payload: dict) -> dict:
    response = client.post(VERIFY, json=payload, headers=admin.headers)
    assert response.status_code == 200, response.text
    return response.json()


def key_reads(database: Database) -> list[str]:
    """Statements that read the access_keys table from now on."""
    statements: list[str] = []

    @event.listens_for(database.engine, "before_cursor_execute")
    def record(_conn, _cursor, statement, *_args):
        if "access_keys" in statement:
            statements.append(statement)

    return statements


def cache_of(client) -> AccessKeyCache:
    return client.app.state.context.access_key_cache


def streaming_put(key: dict, now: datetime) -> dict:
    """A header-signed STREAMING-AWS4-HMAC-SHA256-PAYLOAD request, signed here (botocore signs
    aws-chunked only through its streaming body machinery; restic's real uploads are in
    tests/test_sigv4_streaming.py)."""
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    scope = f"{amz_date[:8]}/us-east-1/s3/aws4_request"
    headers = {"Host": "127.0.0.1:9000", "X-Amz-Date": amz_date, "Content-Encoding": "aws-chunked",
               "X-Amz-Content-Sha256": sigv4.STREAMING_SIGNED_PAYLOAD, "X-Amz-Decoded-Content-Length": "5"}
    credential = f"{key['accessKeyId']}/{scope}"
    signed_headers = "content-encoding;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length"

    def authorization(signature: str) -> str:
        return f"AWS4-HMAC-SHA256 Credential={credential}, SignedHeaders={signed_headers}, Signature={signature}"

    unsigned = sigv4.parse("PUT", "/bucket/upload", "", {**headers, "Authorization": authorization("0" * 64)})
    signature = sigv4.signature(sigv4.signing_key(key["secretKey"], unsigned.credential), unsigned)
    return {"method": "PUT", "path": "/bucket/upload", "query": "",
            "headers": {**headers, "Authorization": authorization(signature)}}


# --- answered from memory ----------------------------------------------------------------------


def test_a_verified_key_is_answered_again_without_reading_the_database(client, admin, key, database):
    assert verify(client, admin, get(key))["valid"] is True
    reads = key_reads(database)
    assert verify(client, admin, get(key))["valid"] is True
    assert reads == []


def test_a_wrong_signature_of_a_cached_key_is_answered_from_memory_too(client, admin, key, database):
    assert verify(client, admin, get(key))["valid"] is True
    reads = key_reads(database)
    forged = get({**key, "secretKey": key["secretKey"][:-1] + ("A" if key["secretKey"][-1] != "A" else "B")})
    assert verify(client, admin, forged) == {"valid": False, "reason": "signature mismatch"}
    assert reads == []


def test_a_streaming_answer_is_the_same_from_memory(client, admin, key, clock):
    payload = streaming_put(key, clock.now())
    first = verify(client, admin, payload)
    assert first["valid"] is True and first["streaming"]["scope"].endswith("/us-east-1/s3/aws4_request")
    assert verify(client, admin, payload) == first


def test_verify_cached_gives_the_routes_verdict_for_a_cached_key(client, admin, key, alice, clock):
    payload = get(key)
    assert verify(client, admin, payload)["valid"] is True
    verdict = cache_of(client).verify_cached(alice.user.org_id, payload["method"], payload["path"],
                                             payload["query"], payload["headers"], None, clock.now())
    assert verdict is not None and verdict.valid
    assert verdict.owner is not None
    assert (verdict.owner.access_key_id, verdict.owner.username, verdict.owner.org_name) == \
           (key["accessKeyId"], "alice", "default")


def test_verify_cached_knows_nothing_of_a_key_never_verified(client, key, alice, clock):
    payload = get(key)
    assert cache_of(client).verify_cached(alice.user.org_id, payload["method"], payload["path"],
                                          payload["query"], payload["headers"], None, clock.now()) is None


def test_verify_cached_leaves_another_organizations_gateway_to_the_slow_way(client, admin, key, clock):
    payload = get(key)
    assert verify(client, admin, payload)["valid"] is True
    other_org = admin.user.org_id + 1000
    assert cache_of(client).verify_cached(other_org, payload["method"], payload["path"], payload["query"],
                                          payload["headers"], None, clock.now()) is None


def test_verify_cached_leaves_a_malformed_request_to_the_slow_way(client, admin, key, alice, clock):
    assert verify(client, admin, get(key))["valid"] is True
    assert cache_of(client).verify_cached(alice.user.org_id, "GET", "/bucket/object", "", {"Host": "x"}, None,
                                          clock.now()) is None


def test_a_scope_not_derived_yet_is_a_miss_that_fills_it(client, admin, key, alice, clock):
    assert verify(client, admin, get(key))["valid"] is True
    elsewhere = get(key, region="eu-west-1")
    cache = cache_of(client)
    assert cache.verify_cached(alice.user.org_id, elsewhere["method"], elsewhere["path"], elsewhere["query"],
                               elsewhere["headers"], None, clock.now()) is None
    assert verify(client, admin, elsewhere)["valid"] is True
    assert cache.verify_cached(alice.user.org_id, elsewhere["method"], elsewhere["path"], elsewhere["query"],
                               elsewhere["headers"], None, clock.now()) is not None


# --- never the secret --------------------------------------------------------------------------


def test_the_cache_keeps_the_scopes_signing_key_not_the_secret(client, admin, key):
    payload = get(key)
    assert verify(client, admin, payload)["valid"] is True
    cache = cache_of(client)
    entry = cache._entries[key["accessKeyId"]]
    credential = sigv4.parse(payload["method"], payload["path"], payload["query"], payload["headers"]).credential
    assert entry.signing_keys == {credential.scope: sigv4.signing_key(key["secretKey"], credential)}
    held = repr(entry) + repr(cache) + repr(entry.facts)
    assert key["secretKey"] not in held
    assert entry.signing_keys[credential.scope].hex() not in held


# --- forgetting at once ------------------------------------------------------------------------


def test_disabling_the_owner_refuses_their_cached_key_at_once(client, admin, key):
    assert verify(client, admin, get(key))["valid"] is True
    assert client.post("/v1/users/alice/disable", headers=admin.headers).status_code == 200
    assert verify(client, admin, get(key)) == {"valid": False, "reason": "access key revoked"}


def test_a_rolled_back_change_keeps_the_cached_key(client, admin, key, database):
    from tokensmith.db.models import AccessKey

    assert verify(client, admin, get(key))["valid"] is True
    with pytest.raises(RuntimeError), database.session() as session:
        session.query(AccessKey).filter_by(access_key_id=key["accessKeyId"]).one().revoked_at = datetime.now(UTC)
        session.flush()
        raise RuntimeError("rolled back")
    assert key["accessKeyId"] in cache_of(client)._entries


@pytest.fixture
def reader(database_url, settings, clock):
    """A second app context on its own engine: another worker process (SQLite) or replica (PostgreSQL)."""
    database = Database(database_url)
    context = AppContext.build(settings, database, SECRET_KEY, clock)
    yield context
    context.verifier.stop()
    context.verifier.close()
    database.dispose()


def verify_on(context: AppContext, org_id: int, payload: dict) -> str | None:
    """The reason the other process refuses ``payload`` for, None when it is valid."""
    with context.database.session() as session:
        verdict = AccessKeyService(session, context.clock, context.keyring, context.access_key_cache) \
            .verify_signature(org_id, payload["method"], payload["path"], payload["query"], payload["headers"])
    return None if verdict.valid else verdict.reason


def test_a_key_deleted_by_another_process_on_the_sqlite_file_is_refused_at_once(
        client, alice, key, reader, database_url):
    if not database_url.startswith("sqlite"):
        pytest.skip("worker processes share a SQLite file; replicas are the PostgreSQL test below")
    payload = get(key)
    assert verify_on(reader, alice.user.org_id, payload) is None  # cached by the other process now
    assert client.delete(f"{KEYS}/{key['accessKeyId']}", headers=alice.headers).status_code == 204
    assert verify_on(reader, alice.user.org_id, payload) == "access key revoked"


def test_a_token_deleted_by_another_process_refuses_its_temporary_keys_at_once(
        client, alice, key, reader, database_url):
    if not database_url.startswith("sqlite"):
        pytest.skip("worker processes share a SQLite file")
    payload = get(key)
    assert verify_on(reader, alice.user.org_id, payload) is None
    assert client.delete(f"/v1/tokens/{alice.token_id}", headers=alice.headers).status_code == 204
    assert verify_on(reader, alice.user.org_id, payload) == "access key revoked"


@pytest.mark.postgres
def test_a_key_deleted_on_one_replica_is_refused_by_the_other_within_a_second(
        client, alice, key, reader, database_url):
    if database_url.startswith("sqlite"):
        pytest.skip("replicas share PostgreSQL")
    reader.verifier.start()
    assert reader.verifier.background.listening.wait(5)
    payload = get(key)
    assert verify_on(reader, alice.user.org_id, payload) is None
    assert client.delete(f"{KEYS}/{key['accessKeyId']}", headers=alice.headers).status_code == 204
    started = time.monotonic()
    while verify_on(reader, alice.user.org_id, payload) is None:
        assert time.monotonic() - started < 1.0, "the other replica still accepted the deleted key after 1 s"
        time.sleep(0.005)


# --- the cache on its own ----------------------------------------------------------------------


def facts(n: int, *, user_id: int = 1, token_id: int | None = 1) -> KeyFacts:
    return KeyFacts(KeyOwner(f"TSMP{n:016d}", "alice", "default"), org_id=1, user_id=user_id, token_id=token_id,
                    expires_at=None)


def test_the_cache_stays_bounded():
    cache = AccessKeyCache(max_size=3)
    for n in range(10):
        cache.put(facts(n), "20261123/us-east-1/s3/aws4_request", b"k" * 32, cache.generation)
    assert len(cache) == 3
    assert set(cache._entries) == {f"TSMP{n:016d}" for n in (7, 8, 9)}


def test_the_scopes_kept_per_key_stay_bounded():
    cache = AccessKeyCache()
    for day in range(1, 11):
        cache.put(facts(1), f"202611{day:02d}/us-east-1/s3/aws4_request", b"k" * 32, cache.generation)
    assert len(cache._entries[facts(1).owner.access_key_id].signing_keys) == MAX_SCOPES_PER_KEY


def test_a_fill_that_raced_an_invalidation_is_not_stored():
    cache = AccessKeyCache()
    generation = cache.generation
    cache.invalidate(Changes(access_key_ids={facts(1).owner.access_key_id}))
    cache.put(facts(1), "20261123/us-east-1/s3/aws4_request", b"k" * 32, generation)
    assert len(cache) == 0


@pytest.mark.parametrize(("changes", "left"), [
    (Changes(access_key_ids={"TSMP0000000000000001"}), {2, 3}),
    (Changes(token_ids={20}), {1, 3}),
    (Changes(user_ids={30}), {1, 2}),
    (Changes(all_access_keys=True), set()),
    (Changes(everything=True), set()),
    (Changes(digests={"a digest"}), {1, 2, 3}),
], ids=["the key", "its minting token", "its owner", "every key", "everything", "a token digest only"])
def test_an_invalidation_drops_what_it_concerns(changes, left):
    cache = AccessKeyCache()
    for n, user_id, token_id in ((1, 10, 10), (2, 10, 20), (3, 30, None)):
        cache.put(facts(n, user_id=user_id, token_id=token_id), "20261123/us-east-1/s3/aws4_request", b"k" * 32,
                  cache.generation)
    cache.invalidate(changes)
    assert set(cache._entries) == {f"TSMP{n:016d}" for n in left}


def test_cached_keys_are_forgotten_after_the_ttl():
    now = [0.0]
    cache = AccessKeyCache(ttl=30, monotonic=lambda: now[0])
    request = sigv4.parse(**get({"accessKeyId": facts(1).owner.access_key_id, "secretKey": "s" * 40}))
    cache.put(facts(1), request.credential.scope, sigv4.signing_key("s" * 40, request.credential), cache.generation)
    assert cache.answer(1, request, None, datetime.now(UTC)) is not None
    now[0] = 30.0
    assert cache.answer(1, request, None, datetime.now(UTC)) is None
    assert len(cache) == 0


# --- renewed before it expires -------------------------------------------------------------------


def cached_request(now: list[float], refreshes: list[str]) -> tuple[AccessKeyCache, sigv4.SignedRequest]:
    """A cache (ttl 40 s, clock ``now``) holding key 1, whose refresh requests land in ``refreshes``."""
    cache = AccessKeyCache(ttl=40, monotonic=lambda: now[0])
    cache.refresh = refreshes.append
    request = sigv4.parse(**get({"accessKeyId": facts(1).owner.access_key_id, "secretKey": "s" * 40}))
    cache.put(facts(1), request.credential.scope, sigv4.signing_key("s" * 40, request.credential), cache.generation)
    return cache, request


def test_a_key_answered_in_the_last_quarter_of_its_entrys_life_is_read_again_once_meanwhile_answered():
    now, refreshes = [0.0], []
    cache, request = cached_request(now, refreshes)
    now[0] = 29.9
    assert cache.answer(1, request, None, datetime.now(UTC)).valid
    assert refreshes == []
    now[0] = 30.0
    assert cache.answer(1, request, None, datetime.now(UTC)).valid
    assert cache.answer(1, request, None, datetime.now(UTC)).valid
    assert refreshes == [facts(1).owner.access_key_id]


def test_a_renewed_entry_lives_a_whole_ttl_from_its_read_with_the_scopes_derived_so_far():
    now, refreshes = [0.0], []
    cache, request = cached_request(now, refreshes)
    now[0] = 35.0
    cache.answer(1, request, None, datetime.now(UTC))
    renewal = cache.renewal(facts(1).owner.access_key_id)
    assert renewal is not None
    cache.renew(renewal, facts(1))
    now[0] = 74.0
    assert cache.answer(1, request, None, datetime.now(UTC)).valid
    assert refreshes == [facts(1).owner.access_key_id] * 2  # 74 s is in the renewed entry's last quarter
    now[0] = 75.0
    assert cache.answer(1, request, None, datetime.now(UTC)) is None


def test_a_key_its_refresh_finds_dead_is_dropped():
    now, refreshes = [30.0], []
    cache, request = cached_request(now, refreshes)
    now[0] = 60.0
    cache.answer(1, request, None, datetime.now(UTC))
    renewal = cache.renewal(facts(1).owner.access_key_id)
    assert renewal is not None
    cache.renew(renewal, None)
    assert len(cache) == 0


def test_a_refresh_that_raced_an_invalidation_stores_nothing():
    now, refreshes = [0.0], []
    cache, request = cached_request(now, refreshes)
    now[0] = 35.0
    cache.answer(1, request, None, datetime.now(UTC))
    renewal = cache.renewal(facts(1).owner.access_key_id)
    assert renewal is not None
    cache.invalidate(Changes(access_key_ids={facts(1).owner.access_key_id}))
    cache.renew(renewal, facts(1))
    assert len(cache) == 0


def test_a_key_not_answered_near_its_end_is_not_read_again_and_expires():
    now, refreshes = [0.0], []
    cache, request = cached_request(now, refreshes)
    now[0] = 40.0
    assert cache.answer(1, request, None, datetime.now(UTC)) is None
    assert refreshes == [] and len(cache) == 0


def test_the_background_refresh_reads_the_key_and_keeps_it_cached(client, admin, key, alice, database):
    cache = cache_of(client)
    assert verify(client, admin, get(key))["valid"] is True
    entry = cache._entries[key["accessKeyId"]]
    entry.refreshing = True  # as ``answer`` leaves it when it asks for a refresh
    with database.session() as session:
        AccessKeyService(session, client.app.state.context.clock, client.app.state.context.keyring,
                         cache).refresh_cached(key["accessKeyId"])
    renewed = cache._entries[key["accessKeyId"]]
    assert renewed is not entry and not renewed.refreshing and renewed.fresh_until > entry.fresh_until
    assert renewed.signing_keys == entry.signing_keys
    assert renewed.facts is entry.facts  # unchanged: the same owner, with the answers encoded for it


def test_the_background_refresh_of_a_key_revoked_unheard_drops_it(client, admin, key, alice, database):
    cache = cache_of(client)
    assert verify(client, admin, get(key))["valid"] is True
    cache._entries[key["accessKeyId"]].refreshing = True
    with database.engine.begin() as connection:  # a write no change hub hears of (a lost notification)
        connection.exec_driver_sql("UPDATE access_keys SET revoked_at = CURRENT_TIMESTAMP WHERE access_key_id = "
                                   f"'{key['accessKeyId']}'")
    with database.session() as session:
        AccessKeyService(session, client.app.state.context.clock, client.app.state.context.keyring,
                         cache).refresh_cached(key["accessKeyId"])
    assert key["accessKeyId"] not in cache._entries


def test_the_refresher_reads_on_its_own_thread_and_stops():
    read: list[tuple[str, str]] = []
    done = threading.Event()

    def record(key_id: str) -> None:
        read.append((key_id, threading.current_thread().name))
        done.set()

    refresher = Refresher(record, "tokensmith-access-key-refresh")
    refresher.submit("TSMP0000000000000001")
    assert done.wait(5)
    refresher.stop()
    assert read == [("TSMP0000000000000001", "tokensmith-access-key-refresh")]


def test_a_failing_refresh_leaves_the_refresher_running(caplog):
    done = threading.Event()

    def read(key_id: str) -> None:
        if key_id == "bad":
            raise RuntimeError("database gone")
        done.set()

    refresher = Refresher(read, "tokensmith-access-key-refresh")
    refresher.submit("bad")
    refresher.submit("good")
    assert done.wait(5)
    refresher.stop()
    assert "a refresh failed: RuntimeError" in caplog.text


def test_an_expired_key_is_refused_from_memory():
    request = sigv4.parse(**get({"accessKeyId": facts(1).owner.access_key_id, "secretKey": "s" * 40}))
    cache = AccessKeyCache()
    dying = KeyFacts(facts(1).owner, org_id=1, user_id=1, token_id=1, expires_at=datetime.now(UTC))
    cache.put(dying, request.credential.scope, sigv4.signing_key("s" * 40, request.credential), cache.generation)
    verdict = cache.answer(1, request, None, datetime.now(UTC) + timedelta(seconds=1))
    assert verdict is not None and (verdict.valid, verdict.reason) == (False, "access key expired")


def test_a_cache_ttl_over_a_minute_is_refused():
    with pytest.raises(ValueError, match="ttl"):
        AccessKeyCache(ttl=61)


def test_the_cache_size_is_an_operator_setting(tmp_path, database):
    from tokensmith.api.app import create_app

    settings = Settings.from_env({"TOKENSMITH_DATA_DIR": str(tmp_path), "TOKENSMITH_DATABASE_URL": database.url,
                                  "TOKENSMITH_ACCESS_KEY_CACHE_SIZE": "7"})
    assert create_app(settings, database, SECRET_KEY).state.context.access_key_cache.max_size == 7


def test_an_access_key_cache_size_that_is_not_a_positive_number_is_refused(tmp_path):
    with pytest.raises(ValueError, match="TOKENSMITH_ACCESS_KEY_CACHE_SIZE"):
        Settings.from_env({"TOKENSMITH_DATA_DIR": str(tmp_path), "TOKENSMITH_ACCESS_KEY_CACHE_SIZE": "0"})


# --- the change payload ------------------------------------------------------------------------


def test_access_key_ids_travel_in_the_change_payload():
    changes = Changes(token_ids={1}, access_key_ids={"TSMP0000000000000001"}, all_access_keys=True)
    assert Changes.from_payload(changes.to_payload()) == changes


def test_a_payload_without_access_keys_reads_as_none_changed():
    changes = Changes.from_payload('{"t": [1], "u": [2], "d": ["x"]}')
    assert (changes.access_key_ids, changes.all_access_keys, changes.everything) == (set(), False, False)


def test_a_payload_with_only_token_changes_is_what_older_versions_wrote():
    assert Changes(token_ids={1}).to_payload() == '{"t": [1], "u": [], "d": []}'


def test_the_refresher_reads_a_key_asked_for_twice_while_it_waits_once():
    release, reads = threading.Event(), []

    def read(key: str) -> None:
        reads.append(key)
        release.wait(5)

    refresher = Refresher(read, "test-refresher")
    for _ in range(3):
        refresher.submit("busy")  # asked by several requests (threads) before the first read ends
    refresher.submit("other")
    release.set()
    refresher.stop()
    assert reads == ["busy", "other"]
