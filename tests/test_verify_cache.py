"""The verification cache: fast repeats, invalidation on any change, bounded memory, replicas."""

import threading
import time
import tracemalloc
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event, update

from tests.conftest import SECRET_KEY
from tokensmith import secrets
from tokensmith.accounts.service import AccountService
from tokensmith.db.changes import Changes
from tokensmith.db.database import Database
from tokensmith.db.models import Token, User
from tokensmith.errors import AuthenticationFailed
from tokensmith.verify.cache import VerificationCache
from tokensmith.verify.core import Identity, Verifier


@pytest.fixture
def verifier(database, clock):
    verifier = Verifier(database, SECRET_KEY, clock)
    yield verifier
    verifier.close()


def count_selects(database: Database) -> list[str]:
    statements: list[str] = []

    @event.listens_for(database.engine, "before_cursor_execute")
    def record(_conn, _cursor, statement, *_args):
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    return statements


def test_a_repeated_verification_is_answered_from_memory(verifier, database, alice):
    verifier.verify(alice.secret)
    selects = count_selects(database)
    for _ in range(20):
        assert verifier.verify(alice.secret).username == "alice"
    assert selects == []


def test_a_deleted_token_is_refused_by_the_same_process_at_once(client, alice):
    assert client.get("/v1/whoami", headers=alice.headers).status_code == 200
    assert client.delete(f"/v1/tokens/{alice.token_id}", headers=alice.headers).status_code == 204
    assert client.get("/v1/whoami", headers=alice.headers).status_code == 401
    assert client.get("/v1/auth/verify", headers=alice.headers).status_code == 401


def test_disabling_a_user_anywhere_in_the_orm_invalidates_their_cached_tokens(verifier, database, alice):
    verifier.verify(alice.secret)
    with database.session() as session:
        session.get(User, alice.user.id).disabled = True
    with pytest.raises(AuthenticationFailed):
        verifier.verify(alice.secret)


def test_demoting_an_admin_takes_admin_scopes_away_at_once(verifier, database, admin):
    assert "clusters:write" in verifier.verify(admin.secret).scopes
    with database.session() as session:
        session.get(User, admin.user.id).is_admin = False
    assert "clusters:write" not in verifier.verify(admin.secret).scopes


def test_a_grant_change_on_the_token_row_invalidates(verifier, database, alice):
    assert "tokens:write" in verifier.verify(alice.secret).scopes
    with database.session() as session:
        token = session.query(Token).filter_by(public_id=alice.token_id).one()
        token.scopes = "tokens:read"
    assert verifier.verify(alice.secret).scopes == frozenset({"tokens:read"})


def test_a_bulk_orm_update_invalidates_everything(verifier, database, alice, bob):
    verifier.verify(alice.secret)
    verifier.verify(bob.secret)
    with database.session() as session:
        session.execute(update(Token).values(revoked_at=verifier.clock.now()))
    for account in (alice, bob):
        with pytest.raises(AuthenticationFailed):
            verifier.verify(account.secret)


def test_a_rolled_back_change_keeps_the_cache(verifier, database, alice):
    verifier.verify(alice.secret)
    with pytest.raises(RuntimeError), database.session() as session:
        session.get(User, alice.user.id).disabled = True
        session.flush()
        raise RuntimeError("abort")
    selects = count_selects(database)
    assert verifier.verify(alice.secret).username == "alice"
    assert selects == []


def test_writing_last_used_does_not_invalidate(verifier, database, alice):
    verifier.verify(alice.secret)
    verifier.usage.flush(force=True)
    selects = count_selects(database)
    verifier.verify(alice.secret)
    assert selects == []


def test_expiry_is_checked_on_every_call_even_when_cached(verifier, alice, clock):
    verifier.verify(alice.secret)
    clock.advance(timedelta(days=30))
    with pytest.raises(AuthenticationFailed, match="token expired"):
        verifier.verify(alice.secret)


def test_an_unknown_secret_hits_the_database_once_then_the_negative_cache(verifier, database):
    unknown = secrets.generate()
    with pytest.raises(AuthenticationFailed, match="invalid token"):
        verifier.verify(unknown)
    selects = count_selects(database)
    for _ in range(10):
        with pytest.raises(AuthenticationFailed, match="invalid token"):
            verifier.verify(unknown)
    assert selects == []


def test_a_malformed_secret_never_reaches_the_database(verifier, database):
    good = secrets.generate()
    wrong_checksum = good[:-1] + ("x" if good[-1] != "x" else "y")  # always a different last character
    selects = count_selects(database)
    for bad in ("", "tsm_short", wrong_checksum, "Bearer x"):
        with pytest.raises(AuthenticationFailed):
            verifier.verify(bad)
    assert selects == []
    assert verifier.cache.negative_size == 0


def test_the_negative_cache_stays_bounded_under_a_flood_of_random_secrets(database, clock):
    verifier = Verifier(database, SECRET_KEY, clock, VerificationCache(negative_max_size=64))
    for _ in range(500):
        with pytest.raises(AuthenticationFailed):
            verifier.verify(secrets.generate())
    assert verifier.cache.negative_size == 64
    verifier.close()


def test_the_positive_cache_stays_bounded(database, clock, make_account):
    verifier = Verifier(database, SECRET_KEY, clock, VerificationCache(max_size=5))
    accounts = [make_account(f"user{i}") for i in range(12)]
    for account in accounts:
        verifier.verify(account.secret)
    assert len(verifier.cache) == 5
    assert verifier.verify(accounts[0].secret).username == "user0"  # evicted ones still verify
    verifier.close()


def random_secret() -> str:
    # Not secrets.generate(): the hygiene plugin remembers every secret that makes, which would be the growth seen.
    return secrets.PREFIX + secrets.random_base62(secrets.BODY_LENGTH + secrets.CHECKSUM_LENGTH)


def test_cache_memory_stays_bounded_under_a_flood():
    cache = VerificationCache(max_size=100, negative_max_size=1_000)
    tracemalloc.start()
    try:
        for _ in range(5_000):
            cache.put_unknown(secrets.digest(random_secret(), SECRET_KEY), cache.generation)
        after_warmup, _ = tracemalloc.get_traced_memory()
        for _ in range(20_000):
            cache.put_unknown(secrets.digest(random_secret(), SECRET_KEY), cache.generation)
        after_flood, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert cache.negative_size == 1_000
    assert after_flood - after_warmup < 64 * 1024


def test_a_cache_ttl_over_a_minute_is_refused():
    with pytest.raises(ValueError):
        VerificationCache(ttl=61)


def test_cached_entries_expire_after_the_ttl(database, clock, alice):
    now = [0.0]
    verifier = Verifier(database, SECRET_KEY, clock, VerificationCache(ttl=30, monotonic=lambda: now[0]))
    verifier.verify(alice.secret)
    selects = count_selects(database)
    now[0] = 31.0
    verifier.verify(alice.secret)
    assert len(selects) >= 1
    verifier.close()


# --- renewed before it expires -------------------------------------------------------------------


def test_a_caller_verified_in_the_last_quarter_of_its_entrys_life_is_looked_up_again_in_the_background(
        database, clock, alice):
    now = [0.0]
    verifier = Verifier(database, SECRET_KEY, clock, VerificationCache(ttl=40, monotonic=lambda: now[0]))
    looked_up = threading.Event()
    renew = verifier._renew
    verifier.refresher._read = lambda digest: (renew(digest), looked_up.set())
    verifier.verify(alice.secret)
    now[0] = 30.0
    selects = count_selects(database)
    assert verifier.verify(alice.secret).username == "alice"  # answered from memory meanwhile
    assert looked_up.wait(5)
    assert len(selects) == 1  # the background lookup
    now[0] = 69.0  # past the first entry's end, within the renewed one's
    assert verifier.verify(alice.secret).username == "alice"
    verifier.close()


def test_a_renewal_keeps_the_same_identity_when_nothing_changed(database, clock, alice):
    now = [0.0]
    verifier = Verifier(database, SECRET_KEY, clock, VerificationCache(ttl=40, monotonic=lambda: now[0]))
    verifier.refresher.submit = lambda digest: None  # renewed by hand below
    first = verifier.verify(alice.secret)
    now[0] = 35.0
    verifier.verify(alice.secret)
    verifier._renew(secrets.digest(alice.secret, SECRET_KEY))
    now[0] = 70.0
    assert verifier.verify(alice.secret) is first  # with the answers the doors encoded for it
    verifier.close()


def test_a_renewal_of_a_token_revoked_unheard_drops_it(database, clock, alice):
    now = [0.0]
    verifier = Verifier(database, SECRET_KEY, clock, VerificationCache(ttl=40, monotonic=lambda: now[0]))
    verifier.cache.refresh = lambda digest: None  # renewed by hand below
    verifier.verify(alice.secret)
    now[0] = 35.0
    verifier.verify(alice.secret)
    with database.engine.begin() as connection:  # Core: no session events, as if a notice were lost
        connection.execute(update(Token.__table__).values(revoked_at=clock.now()))
    verifier._renew(secrets.digest(alice.secret, SECRET_KEY))
    assert len(verifier.cache) == 0
    verifier.close()


def an_identity() -> Identity:
    return Identity(token_id=1, token_public_id="tok_1", token_name="t", user_id=1, user_public_id="usr_1",
                    username="alice", org_id=1, org_public_id="org_1", org_name="default", is_admin=False,
                    created_at=datetime.now(UTC), expires_at=None, cluster_ids=frozenset(), scopes=frozenset())


def test_a_renewal_that_raced_an_invalidation_stores_nothing():
    now = [0.0]
    cache = VerificationCache(ttl=40, monotonic=lambda: now[0])
    cache.refresh = lambda digest: None
    identity = an_identity()
    cache.put("d", identity, cache.generation)
    now[0] = 35.0
    cache.get("d")
    renewal = cache.renewal("d")
    assert renewal is not None
    cache.invalidate(Changes(digests={"d"}))
    cache.renew("d", renewal, identity)
    assert len(cache) == 0


def test_an_entry_not_used_near_its_end_is_not_looked_up_again_and_expires():
    now, asked = [0.0], []
    cache = VerificationCache(ttl=40, monotonic=lambda: now[0])
    cache.refresh = asked.append
    cache.put("d", an_identity(), cache.generation)
    now[0] = 40.0
    assert cache.get("d") is None and asked == []


def test_the_sweep_drops_tokens_revoked_behind_the_orms_back(verifier, database, alice, clock):
    verifier.verify(alice.secret)
    with database.engine.begin() as connection:  # Core: no session events, as if a notice were lost
        connection.execute(update(Token.__table__).values(revoked_at=clock.now()))
    assert verifier.verify(alice.secret).username == "alice"  # still cached...
    assert verifier.background.sweep() == 1
    with pytest.raises(AuthenticationFailed):
        verifier.verify(alice.secret)


@pytest.mark.postgres
def test_a_second_replica_refuses_a_deleted_token_within_a_second(database_url, clock, alice):
    if database_url.startswith("sqlite"):
        pytest.skip("replicas share PostgreSQL")
    one, two = Database(database_url), Database(database_url)  # two engines: as two processes
    replica = Verifier(two, SECRET_KEY, clock)
    replica.start()
    try:
        assert replica.background.listening.wait(5)
        replica.verify(alice.secret)
        with one.session() as session:
            actor = AccountService(session, clock).get_user_in_org(alice.user.org_id, alice.user.public_id)
            token = session.query(Token).filter_by(public_id=alice.token_id, user_id=actor.id).one()
            token.revoked_at = clock.now()
        started = time.monotonic()
        while time.monotonic() - started < 1.0:
            try:
                replica.verify(alice.secret)
            except AuthenticationFailed:
                break
            time.sleep(0.005)
        else:
            pytest.fail("the second replica still accepted the deleted token after 1 s")
    finally:
        replica.stop()
        replica.close()
        one.dispose()
        two.dispose()


def test_the_cache_size_is_an_operator_setting(tmp_path, database):
    from tokensmith.api.app import create_app
    from tokensmith.config import Settings

    settings = Settings.from_env({"TOKENSMITH_DATA_DIR": str(tmp_path), "TOKENSMITH_DATABASE_URL": database.url,
                                  "TOKENSMITH_VERIFICATION_CACHE_SIZE": "5"})
    app = create_app(settings, database, SECRET_KEY)
    assert app.state.context.verifier.cache.max_size == 5


def test_a_cache_size_that_is_not_a_positive_number_is_refused(tmp_path):
    from tokensmith.config import Settings

    with pytest.raises(ValueError, match="TOKENSMITH_VERIFICATION_CACHE_SIZE"):
        Settings.from_env({"TOKENSMITH_DATA_DIR": str(tmp_path), "TOKENSMITH_VERIFICATION_CACHE_SIZE": "0"})
