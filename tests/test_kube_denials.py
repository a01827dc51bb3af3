"""TokenReview denials in the audit log: who was refused at which cluster, why, and never a flood."""
# ruff: noqa: F811 - the kube fixtures are shared with tests/test_kube_api.py by import

import json
import logging
from datetime import timedelta

import pytest
from sqlalchemy import select

from tests.conftest import SECRET_KEY
from tests.test_kube_api import add_cluster, create_token, kube, mint, prod, review, staging  # noqa: F401
from tokensmith import secrets
from tokensmith.db.models import AuditEvent, Cluster, User
from tokensmith.kube import denials
from tokensmith.tokens.service import TokenService

DENIED = denials.DENIED_ACTION
REFUSED = denials.REFUSED_ACTION


def events(database, action):
    with database.session() as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)))


def details(event):
    return json.loads(event.details)


def the_one(database, action=DENIED):
    found = events(database, action)
    assert len(found) == 1, [(e.target, e.details) for e in found]
    return found[0], details(found[0])


def credential_id(client, admin, cluster):
    listed = client.get(f"/v1/clusters/{cluster['id']}/webhook-credentials", headers=admin.headers).json()
    return listed[0]["id"]


def test_an_unknown_token_is_recorded_with_cluster_reason_credential_and_address(client, admin, database, kube):
    answer = review(client, kube["prod"], kube["credential"], secrets.generate())
    assert answer.json()["status"]["authenticated"] is False
    event, facts = the_one(database)
    assert event.target == kube["prod"]["id"] and event.outcome == "denied"
    assert event.actor_user == f"webhook:{credential_id(client, admin, kube['prod'])}"
    assert event.client_ip == "testclient"
    assert facts["reason"] == "unknown token" and facts["token"] == "unknown" and facts["count"] == 1


def test_a_deleted_token_is_recorded_as_revoked_with_its_id(client, alice, database, kube):
    client.delete(f"/v1/tokens/{kube['token_id']}", headers=alice.headers)
    review(client, kube["prod"], kube["credential"], kube["secret"])
    _, facts = the_one(database)
    assert (facts["token"], facts["reason"]) == (kube["token_id"], "token revoked")


def test_an_expired_token_is_recorded_as_expired_with_its_id(client, clock, database, kube):
    clock.advance(timedelta(days=31))
    review(client, kube["prod"], kube["credential"], kube["secret"])
    _, facts = the_one(database)
    assert (facts["token"], facts["reason"]) == (kube["token_id"], "token expired")


def test_a_token_not_granting_the_cluster_is_recorded(client, admin, database, kube):
    staging_credential = mint(client, admin, kube["staging"])["secret"]
    review(client, kube["staging"], staging_credential, kube["secret"])
    event, facts = the_one(database)
    assert event.target == kube["staging"]["id"]
    assert (facts["token"], facts["reason"]) == (kube["token_id"], "token does not grant this cluster")


def test_a_token_without_the_kubernetes_scope_is_recorded(client, database, clock, kube):
    with database.session() as session:
        owner = session.scalars(select(User).where(User.username == "alice")).one()
        cluster = session.scalars(select(Cluster).where(Cluster.name == "prod")).one()
        created = TokenService(session, clock, SECRET_KEY).create(owner, "no-kube", clusters=[cluster],
                                                                  scopes=["tokens:read"])
        token_id = created.token.public_id
    review(client, kube["prod"], kube["credential"], created.secret)
    _, facts = the_one(database)
    assert (facts["token"], facts["reason"]) == (token_id, "token lacks the kubernetes scope")


def test_a_wrong_audience_is_recorded(client, database, kube):
    review(client, kube["prod"], kube["credential"], kube["secret"], audiences=["https://elsewhere:6443"])
    _, facts = the_one(database)
    assert facts["reason"] == "none of the requested audiences is this cluster's"


def test_another_organizations_token_is_recorded_as_unknown(client, database, mallory, kube):
    add_cluster(client, mallory, "evil-prod")
    theirs = create_token(client, mallory, clusters=["evil-prod"]).json()["secret"]
    review(client, kube["prod"], kube["credential"], theirs)
    _, facts = the_one(database)
    assert (facts["token"], facts["reason"]) == ("unknown", "token does not grant this cluster")


def test_an_accepted_review_records_nothing(client, database, kube):
    assert review(client, kube["prod"], kube["credential"], kube["secret"]).json()["status"]["authenticated"]
    assert events(database, DENIED) == [] and events(database, REFUSED) == []


@pytest.mark.parametrize("credential", ["wrong", "malformed", "missing"])
def test_a_failed_webhook_credential_is_recorded_against_the_cluster(client, database, kube, credential):
    headers = {"wrong": {"Authorization": f"Bearer {secrets.generate(secrets.WEBHOOK_PREFIX)}"},
               "malformed": {"Authorization": "Bearer garbage"}, "missing": {}}[credential]
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": kube["secret"]}}
    response = client.post(f"/v1/clusters/{kube['prod']['id']}/tokenreview", json=body, headers=headers)
    assert response.status_code == 401
    event, facts = the_one(database, REFUSED)
    assert event.target == kube["prod"]["id"] and event.client_ip == "testclient"
    expected = "no webhook credential sent (is the webhook URL https?)" if credential == "missing" \
        else "invalid webhook credential"
    assert facts["reason"] == expected and "cluster_ref" not in facts


@pytest.fixture
def quiet_test_client():
    """The test client logs each URL it requests; a test that puts a secret in one on purpose mutes that."""
    client_log = logging.getLogger("httpx")
    saved = client_log.level
    client_log.setLevel(logging.WARNING)
    yield
    client_log.setLevel(saved)


def test_a_failed_credential_at_an_unknown_cluster_keeps_what_was_asked_without_secrets(client, database, kube,
                                                                                       quiet_test_client):
    response = client.post(f"/v1/clusters/{kube['secret']}/tokenreview", json={},
                           headers={"Authorization": f"Bearer {kube['credential']}"})
    assert response.status_code == 401
    event, facts = the_one(database, REFUSED)
    assert event.target == "unknown" and event.org_id is None
    assert facts["cluster_ref"] == secrets.mask(kube["secret"])


def test_a_denial_storm_is_coalesced_to_one_event_per_key_per_minute(client, clock, database, kube):
    for _ in range(50):
        review(client, kube["prod"], kube["credential"], kube["secret"], audiences=["https://elsewhere:6443"])
    assert [details(e)["count"] for e in events(database, DENIED)] == [1]
    clock.advance(timedelta(seconds=61))
    review(client, kube["prod"], kube["credential"], kube["secret"], audiences=["https://elsewhere:6443"])
    counts = [details(e)["count"] for e in events(database, DENIED)]
    assert counts == [1, 50]  # the 49 coalesced ones and this one
    assert details(events(database, DENIED)[-1])["coalesced"] is True


def test_each_token_and_reason_has_its_own_key(client, database, kube):
    for _ in range(3):
        review(client, kube["prod"], kube["credential"], secrets.generate())
        review(client, kube["prod"], kube["credential"], kube["secret"], audiences=["https://elsewhere:6443"])
    assert sorted(details(e)["reason"] for e in events(database, DENIED)) == [
        "none of the requested audiences is this cluster's", "unknown token"]


def test_pending_counts_are_written_at_shutdown_and_add_up(app, client, database, kube):
    for _ in range(7):
        review(client, kube["prod"], kube["credential"], secrets.generate())
    assert app.state.context.denials.flush(force=True) == 1
    assert sum(details(e)["count"] for e in events(database, DENIED)) == 7
    assert app.state.context.denials.flush(force=True) == 0


def test_the_coalescer_keeps_a_bounded_number_of_keys(database, clock):
    log = denials.DenialLog(database, clock, max_keys=3)
    for n in range(10):
        for _ in range(2):  # a written event, then a pending one
            log.note(denials.Denial(DENIED, f"cls_{n}", None, "unknown", "unknown token", None, "10.0.0.1", None))
    assert len(log._slots) == 3
    log.flush(force=True)
    assert sum(details(e)["count"] for e in events(database, DENIED)) == 20
