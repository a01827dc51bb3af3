"""Leaked-token response: reporters' reports revoke at once, and the answer never tells what matched."""

import json

import pytest
from sqlalchemy import select

from tests.conftest import SECRET_KEY
from tokensmith import secrets
from tokensmith.db.models import AuditEvent
from tokensmith.leaks import LeakService


@pytest.fixture
def reporter(database, clock):
    with database.session() as session:
        created = LeakService(session, clock, SECRET_KEY).create_reporter("github")
    return {"Authorization": f"Bearer {created.secret}"}


def leak(client, headers, *tokens, url="https://gist.example.com/x", source="github"):
    return client.post("/v1/leaks", json=[{"token": t, "url": url, "source": source} for t in tokens],
                       headers=headers)


def whoami(client, secret):
    return client.get("/v1/whoami", headers={"Authorization": f"Bearer {secret}"})


def test_a_reported_secret_is_revoked_at_once(client, alice, reporter):
    assert whoami(client, alice.secret).status_code == 200
    assert leak(client, reporter, alice.secret).status_code == 202
    assert whoami(client, alice.secret).status_code == 401


def test_the_answer_is_identical_whether_or_not_a_token_matched(client, alice, reporter):
    unknown = secrets.generate()
    lookalike = alice.secret[:-1] + ("A" if alice.secret[-1] != "A" else "B")  # bad checksum
    answers = [leak(client, reporter, t) for t in (unknown, lookalike, alice.secret)]
    assert {a.status_code for a in answers} == {202}
    assert len({a.content for a in answers}) == 1
    assert len({tuple(sorted((k, v) for k, v in a.headers.items() if k != "date")) for a in answers}) == 1


def test_the_audit_log_records_where_it_was_found(client, alice, reporter, database):
    leak(client, reporter, alice.secret, url="https://paste.example.com/abc", source="pastebin-scan")
    with database.session() as session:
        [event] = session.scalars(select(AuditEvent).where(AuditEvent.action == "token.leaked")).all()
        details = json.loads(event.details)
    assert event.target == alice.token_id
    assert details["url"] == "https://paste.example.com/abc"
    assert details["source"] == "pastebin-scan"
    assert event.actor_user == "reporter:github"


def test_a_secret_still_in_its_rotation_grace_is_revoked_too(client, alice, reporter):
    new = client.post(f"/v1/tokens/{alice.token_id}/rotate", json={"grace": "1d"}, headers=alice.headers).json()
    leak(client, reporter, alice.secret)
    assert whoami(client, new["secret"]).status_code == 401


def test_only_a_reporter_credential_may_report(client, alice, bob):
    assert leak(client, alice.headers, bob.secret).status_code == 401
    assert leak(client, {"Authorization": f"Bearer {secrets.generate(secrets.REPORTER_PREFIX)}"},
                bob.secret).status_code == 401
    assert leak(client, {}, bob.secret).status_code == 401
    assert whoami(client, bob.secret).status_code == 200


def test_malformed_reports_are_422_and_change_nothing(client, alice, reporter):
    assert client.post("/v1/leaks", json={"token": alice.secret}, headers=reporter).status_code == 422
    assert client.post("/v1/leaks", json=[{"token": alice.secret, "extra": 1}], headers=reporter).status_code == 422
    assert whoami(client, alice.secret).status_code == 200


def test_every_report_request_writes_the_same_audit_event_whether_or_not_it_matched(client, alice, reporter,
                                                                                     database):
    leak(client, reporter, secrets.generate())
    leak(client, reporter, alice.secret)
    with database.session() as session:
        received = session.scalars(select(AuditEvent).where(AuditEvent.action == "leaks.reported")
                                   .order_by(AuditEvent.id)).all()
    assert [(e.actor_user, e.target, e.details, e.org_id) for e in received] == [
        ("reporter:github", None, '{"reports": 1}', None)] * 2


def test_a_matching_token_is_revoked_before_the_answer_and_announced_after_it(database, clock, alice, reporter):
    from tokensmith.db.models import Token
    from tokensmith.leaks import Report

    with database.session() as session:
        leaks = LeakService(session, clock, SECRET_KEY)
        reporter_row = leaks.authenticate(reporter["Authorization"].split()[1])
        leaked = leaks.report(reporter_row, [Report(alice.secret, "https://x", "scan")], "10.0.0.9", "scanner")
    with database.session() as session:
        assert session.scalars(select(Token).where(Token.public_id == alice.token_id)).one().revoked_at is not None
        assert session.scalars(select(AuditEvent).where(AuditEvent.action == "token.leaked")).all() == []
        LeakService(session, clock, SECRET_KEY).announce(leaked)
    with database.session() as session:
        [event] = session.scalars(select(AuditEvent).where(AuditEvent.action == "token.leaked")).all()
        assert (event.target, event.client_ip) == (alice.token_id, "10.0.0.9")
