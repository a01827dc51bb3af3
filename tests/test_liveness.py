"""One rule for "expired" and "live": the Python predicate and the SQL condition agree everywhere."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from tokensmith import audit, secrets
from tokensmith.db.models import Token, User
from tokensmith.kube import kubeconfig
from tokensmith.tokens.liveness import is_expired, live_token, unexpired


def _live_names(database, now) -> set[str]:
    with database.session() as session:
        return set(session.scalars(select(Token.name).where(live_token(now))))


def test_a_token_is_expired_from_its_expiry_instant_on(clock):
    now = clock.now()
    assert not is_expired(None, now)
    assert not is_expired(now + timedelta(microseconds=1), now)
    assert is_expired(now, now)


def test_the_sql_rule_agrees_with_is_expired_at_the_expiry_instant(database, make_account, clock):
    make_account("alice", expiration="1h")
    clock.advance(timedelta(hours=1))
    now = clock.now()
    with database.session() as session:
        token = session.scalars(select(Token)).one()
        assert is_expired(token.expires_at, now)
        assert session.scalars(select(Token).where(unexpired(Token.expires_at, now))).all() == []


def test_live_tokens_are_unrevoked_unexpired_and_of_enabled_users(database, make_account, clock):
    alice, bob = make_account("alice"), make_account("bob")
    make_account("carol", expiration="1h")
    make_account("dave", expiration="never")
    with database.session() as session:
        session.scalars(select(Token).where(Token.public_id == alice.token_id)).one().revoked_at = clock.now()
        session.get(User, bob.user.id).disabled = True
    assert _live_names(database, clock.now()) == {"carol's token", "dave's token"}
    clock.advance(timedelta(hours=1))
    assert _live_names(database, clock.now()) == {"dave's token"}  # carol's expired at its instant


def test_the_active_tokens_metric_leaves_out_a_disabled_users_tokens(client, database, admin, alice):
    with database.session() as session:
        session.get(User, alice.user.id).disabled = True
    text = client.get("/metrics", headers=admin.headers).text
    assert "tokensmith_active_tokens 1.0" in text.splitlines()


def test_audit_text_masks_each_credential_with_its_own_prefix():
    webhook, reporter = secrets.generate(secrets.WEBHOOK_PREFIX), secrets.generate(secrets.REPORTER_PREFIX)
    assert audit.scrub(f"{webhook} {reporter}") == f"tsw_…{webhook[-4:]} tsr_…{reporter[-4:]}"


def test_a_file_slug_never_ends_on_a_separator_where_it_is_cut():
    name = "a" * 39 + " production"
    assert kubeconfig.file_slug(name, "token") == "a" * 39
    assert kubeconfig.filename("tok_1", name) == f"kubeconfig-tok_1-{'a' * 39}.yaml"


def test_token_and_webhook_kubeconfig_names_share_one_slug_rule():
    assert kubeconfig.filename("tok_1", "../CI deploy!") == "kubeconfig-tok_1-CI-deploy.yaml"
    assert kubeconfig.webhook_filename("../CI deploy!") == "tokensmith-webhook-CI-deploy.yaml"
    assert kubeconfig.webhook_filename("???") == "tokensmith-webhook-cluster.yaml"
