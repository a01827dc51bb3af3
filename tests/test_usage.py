"""Usage at a glance: verifications per token per hour, counted in memory, written with last_used_at.

GET /v1/tokens/{id}/usage reads the stored hourly buckets; replicas add to the same buckets.
"""

from datetime import datetime, timedelta

import pytest
from sqlalchemy import event, select

from tests.conftest import SECRET_KEY
from tokensmith.db.models import TokenUsageHour
from tokensmith.verify.core import Verifier

WRITES = ("INSERT", "UPDATE", "DELETE")


@pytest.fixture
def verifier(database, clock):
    verifier = Verifier(database, SECRET_KEY, clock)
    yield verifier
    verifier.close()


@pytest.fixture
def writes(database):
    """Every INSERT, UPDATE or DELETE statement that reaches the database."""
    seen: list[str] = []

    def listener(_conn, _cursor, statement, _parameters, _context, _executemany):
        if statement.lstrip().upper().startswith(WRITES):
            seen.append(statement)

    event.listen(database.engine, "before_cursor_execute", listener)
    yield seen
    event.remove(database.engine, "before_cursor_execute", listener)


def usage(client, account, token_id, **params):
    return client.get(f"/v1/tokens/{token_id}/usage", params=params, headers=account.headers)


def counts(response) -> dict[datetime, int]:
    return {datetime.fromisoformat(h["hour"]): h["count"] for h in response.json()["hours"] if h["count"]}


def hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def test_verifications_cost_no_database_write_until_the_flush(verifier, alice, writes):
    verifier.verify(alice.secret, "10.0.0.7")
    for _ in range(200):
        verifier.verify(alice.secret, "10.0.0.7")
    assert writes == []
    verifier.usage.flush(force=True)
    # One UPDATE of last_used_at, one upsert of the hour's count, and the hourly prune of old buckets.
    assert [w.split()[0].upper() for w in writes] == ["UPDATE", "INSERT", "DELETE"]


def test_counts_per_hour_match_the_verifications_made(client, verifier, alice, clock):
    made = {}
    for uses in (3, 0, 7, 1):
        made[hour(clock.now())] = uses
        for _ in range(uses):
            verifier.verify(alice.secret)
        clock.advance(timedelta(hours=1))
    clock.advance(timedelta(minutes=-59))  # still in the last hour with a use
    verifier.usage.flush(force=True)
    response = usage(client, alice, alice.token_id, hours=4)
    assert response.status_code == 200
    assert counts(response) == {h: n for h, n in made.items() if n}
    assert response.json()["total"] == 11


def test_the_window_lists_every_hour_oldest_first_with_zeros(client, alice, clock):
    hours = usage(client, alice, alice.token_id, hours=5).json()["hours"]
    starts = [datetime.fromisoformat(h["hour"]) for h in hours]
    assert starts == [hour(clock.now()) - timedelta(hours=n) for n in (4, 3, 2, 1, 0)]
    assert all(h["count"] == 0 for h in hours)


def test_replicas_add_to_the_same_hour(client, database, clock, alice):
    first, second = Verifier(database, SECRET_KEY, clock), Verifier(database, SECRET_KEY, clock)
    try:
        for _ in range(4):
            first.verify(alice.secret)
        for _ in range(6):
            second.verify(alice.secret)
        first.usage.flush(force=True)
        second.usage.flush(force=True)
        first.verify(alice.secret)
        first.usage.flush(force=True)
    finally:
        first.close()
        second.close()
    assert counts(usage(client, alice, alice.token_id)) == {hour(clock.now()): 11}


def test_a_periodic_flush_writes_counts_at_most_once_a_minute(verifier, alice, clock, writes):
    upserts = lambda: [s for s in writes if s.lstrip().upper().startswith("INSERT")]  # noqa: E731
    verifier.verify(alice.secret)
    verifier.usage.flush()  # the first flush only sets aside what record() may still be adding to
    verifier.usage.flush()
    assert len(upserts()) == 1
    for _ in range(10):
        clock.advance(timedelta(seconds=5))
        verifier.verify(alice.secret)
        verifier.usage.flush()
    assert len(upserts()) == 1
    clock.advance(timedelta(seconds=15))
    verifier.usage.flush()
    assert len(upserts()) == 2


def test_requests_through_the_app_are_counted(app, client, alice, clock):
    for _ in range(5):
        assert client.get("/v1/whoami", headers=alice.headers).status_code == 200
    app.state.context.verifier.usage.flush(force=True)
    body = usage(client, alice, alice.token_id).json()
    # The usage request itself is a verification too, counted at the next flush.
    assert body["total"] == 5 and body["last_used_at"] is not None and body["unused_days"] == 0


def test_unused_for_counts_whole_days_since_the_last_use(client, verifier, alice, bob, clock):
    verifier.verify(alice.secret)
    verifier.usage.flush(force=True)
    clock.advance(timedelta(days=12, hours=5))
    assert usage(client, bob, bob.token_id).json()["unused_days"] == 12  # never used: since created
    response = usage(client, alice, alice.token_id, hours=1)
    assert response.json()["unused_days"] == 12 and response.json()["total"] == 0


def test_someone_elses_token_is_404(client, alice, bob, mallory):
    assert usage(client, bob, alice.token_id).status_code == 404
    assert usage(client, mallory, alice.token_id).status_code == 404


@pytest.mark.parametrize("hours", [0, -1, 24 * 90 + 1, "many"])
def test_a_window_out_of_range_is_422(client, alice, hours):
    response = usage(client, alice, alice.token_id, hours=hours)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")


def test_buckets_older_than_90_days_are_pruned(client, verifier, make_account, clock):
    carol = make_account("carol", expiration="1y")
    verifier.verify(carol.secret)
    verifier.usage.flush(force=True)
    clock.advance(timedelta(days=91))
    assert usage(client, carol, carol.token_id, hours=24 * 90).json()["total"] == 0  # out of any window
    verifier.verify(carol.secret)
    verifier.usage.flush(force=True)
    with client.app.state.context.database.session() as session:
        hours = session.scalars(select(TokenUsageHour.hour)).all()
    assert hours == [hour(clock.now())]
