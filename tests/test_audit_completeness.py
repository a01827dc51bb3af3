"""Every state-changing operation of the use-case layer records exactly one audit event.

The table below runs each operation once. A new operation that changes state and is missing from
the table fails ``test_the_table_covers_every_state_changing_operation``; one that forgets its audit
line fails its own case (the ``@operation`` decorator raises AuditMissing).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from tests.conftest import SECRET_KEY
from tests.oidc import OidcIssuer
from tests.pki import CA_PEM
from tokensmith.db.models import AuditEvent
from tokensmith.federation.policies import PolicyRequest
from tokensmith.objectstore.crypto import KeyRing
from tokensmith.policy import ExpiryPolicy
from tokensmith.usecases import (
    OPERATIONS,
    Actor,
    RequestContext,
    access_keys,
    auth,
    clusters,
    device,
    federation,
    org,
    tokens,
    users,
)
from tokensmith.usecases.base import UnitOfWork, UnitsOfWork
from tokensmith.usecases.clusters import ClusterChange, ClusterRequest
from tokensmith.usecases.tokens import TokenRequest

Case = Callable[[UnitOfWork, Actor, dict[str, Any]], Any]
OIDC = OidcIssuer()  # never started: its keys are given inline


def _cluster(uow, actor, made):
    made["cluster"] = clusters.create_cluster(uow, actor, ClusterRequest("prod", "https://10.0.0.1:6443", CA_PEM, "r1"))


def _token(uow, actor, made):
    made["token"] = tokens.issue_token(uow, actor, TokenRequest(name="t", expiration="30d")).token


def _webhook(uow, actor, made):
    made["webhook"] = org.create_webhook(uow, actor, "https://hooks.example.com/x").webhook


def _credential(uow, actor, made):
    _cluster(uow, actor, made)
    made["credential"] = clusters.mint_webhook_credential(uow, actor, "prod").minted.credential


def _vpc(uow, actor, made):
    made["vpc"] = clusters.create_vpc(uow, actor, "v1", "r1", "10.1.0.0/16")


def _user(uow, actor, made):
    made["user"] = users.create_user(uow, actor, "carol", "long enough password")


def _key(uow, actor, made):
    _token(uow, actor, made)
    made["key"] = access_keys.mint_access_key(uow, actor, 3600, "k", token=made["token"].public_id).key


def _login_and_cluster(uow, actor, made):
    _cluster(uow, actor, made)
    made["login"] = tokens.issue_token(uow, actor, TokenRequest(name="cli", expiration="30d")).token


def _as_login(actor, made):
    """The caller as the CLI's login token (a cluster credential is derived from a token)."""
    return dataclasses.replace(actor, kind="token", token_id=made["login"].id, token_public_id=made["login"].public_id)


def _device_request(uow, actor, made):
    made["device"] = device.request_device_authorization(uow, Actor.anonymous(RequestContext()), "laptop", None)


def _approved_device(uow, actor, made):
    _device_request(uow, actor, made)
    device.approve_device_request(uow, actor, made["device"].user_code)


def _service_account(uow, actor, made):
    made["service_account"] = federation.create_service_account(uow, actor, "robot")


def _policy_only(uow, actor, made):
    made["policy"] = federation.create_trust_policy(uow, actor, PolicyRequest(
        name="ci", service_account="robot", issuer=OIDC.url, audience="tokensmith", subject="system:serviceaccount:*:*",
        scopes=["tokens:read", "object-storage:write"], jwks=json.dumps(OIDC.jwks())))


def _trust_policy(uow, actor, made):
    _service_account(uow, actor, made)
    _policy_only(uow, actor, made)


# operation name -> (what must exist first, the call under test)
CASES: dict[str, tuple[Case | None, Case]] = {
    "access_keys.mint_access_key": (_token, lambda uow, a, m: access_keys.mint_access_key(
        uow, a, 3600, "k", token=m["token"].public_id)),
    "access_keys.delete_access_key": (_key, lambda uow, a, m: access_keys.delete_access_key(
        uow, a, m["key"].access_key_id)),
    "auth.change_password": (None, lambda uow, a, m: auth.change_password(
        uow, a, "admin password 123", "another password 456")),
    "auth.sign_in_to_console": (None, lambda uow, a, m: auth.sign_in_to_console(
        uow, Actor.anonymous(RequestContext()), "admin", "admin password 123")),
    "auth.sign_in_with_password": (None, lambda uow, a, m: auth.sign_in_with_password(
        uow, Actor.anonymous(RequestContext()), "admin", "admin password 123", token_name="cli")),
    "clusters.create_cluster": (None, _cluster),
    "clusters.update_cluster": (_cluster, lambda uow, a, m: clusters.update_cluster(
        uow, a, "prod", ClusterChange(audience="https://kubernetes.example", audience_given=True))),
    "clusters.delete_cluster": (_cluster, lambda uow, a, m: clusters.delete_cluster(uow, a, "prod")),
    "clusters.mint_webhook_credential": (_cluster, lambda uow, a, m: clusters.mint_webhook_credential(
        uow, a, "prod")),
    "clusters.revoke_webhook_credential": (_credential, lambda uow, a, m: clusters.revoke_webhook_credential(
        uow, a, "prod", m["credential"].public_id)),
    "clusters.create_vpc": (None, _vpc),
    "clusters.delete_vpc": (_vpc, lambda uow, a, m: clusters.delete_vpc(uow, a, "v1")),
    "org.set_policy": (None, lambda uow, a, m: org.set_policy(uow, a, ExpiryPolicy(90, False, "30d"))),
    "org.create_webhook": (None, _webhook),
    "org.delete_webhook": (_webhook, lambda uow, a, m: org.delete_webhook(uow, a, m["webhook"].public_id)),
    "tokens.issue_token": (None, _token),
    "tokens.issue_token_for": (_user, lambda uow, a, m: tokens.issue_token_for(
        uow, a, "carol", TokenRequest(name="for carol"))),
    "tokens.extend_token": (_token, lambda uow, a, m: tokens.extend_token(uow, a, m["token"].public_id,
                                                                         expiration="90d")),
    "tokens.rotate_token": (_token, lambda uow, a, m: tokens.rotate_token(uow, a, m["token"].public_id)),
    "tokens.delete_token": (_token, lambda uow, a, m: tokens.delete_token(uow, a, m["token"].public_id)),
    "tokens.issue_cluster_credential": (_login_and_cluster, lambda uow, a, m: tokens.issue_cluster_credential(
        uow, _as_login(a, m), "prod")),
    "device.request_device_authorization": (None, _device_request),
    "device.approve_device_request": (_device_request, lambda uow, a, m: device.approve_device_request(
        uow, a, m["device"].user_code)),
    "device.deny_device_request": (_device_request, lambda uow, a, m: device.deny_device_request(
        uow, a, m["device"].user_code)),
    "device.redeem_device_code": (_approved_device, lambda uow, a, m: device.redeem_device_code(
        uow, Actor.anonymous(RequestContext()), m["device"].device_code)),
    "federation.create_service_account": (None, _service_account),
    "federation.set_service_account_disabled": (_service_account, lambda uow, a, m: (
        federation.set_service_account_disabled(uow, a, "robot", disabled=True))),
    "federation.delete_service_account": (_service_account, lambda uow, a, m: (
        federation.delete_service_account(uow, a, "robot"))),
    "federation.issue_service_account_token": (_service_account, lambda uow, a, m: (
        federation.issue_service_account_token(uow, a, "robot", TokenRequest(name="t")))),
    "federation.create_trust_policy": (_service_account, _policy_only),
    "federation.delete_trust_policy": (_trust_policy, lambda uow, a, m: federation.delete_trust_policy(uow, a, "ci")),
    "federation.exchange_token": (_trust_policy, lambda uow, a, m: federation.exchange_token(
        uow, Actor.anonymous(RequestContext()), OIDC.token(uow.clock.now().timestamp()))),
    "federation.assume_role_with_web_identity": (_trust_policy, lambda uow, a, m: (
        federation.assume_role_with_web_identity(uow, Actor.anonymous(RequestContext()),
                                                 "arn:tokensmith:iam::default:role/ci",
                                                 OIDC.token(uow.clock.now().timestamp()), "session"))),
    "users.create_user": (None, _user),
    "users.disable_user": (_user, lambda uow, a, m: users.disable_user(uow, a, "carol")),
    "users.enable_user": (_user, lambda uow, a, m: users.enable_user(uow, a, "carol")),
    "users.reset_password": (_user, lambda uow, a, m: users.reset_password(uow, a, "carol")),
}
CHANGING = sorted(op.spec.name for op in OPERATIONS if op.spec.changes_state)


def test_the_table_covers_every_state_changing_operation():
    assert sorted(CASES) == CHANGING


def test_every_operation_declares_a_known_scope_or_none():
    from tokensmith import scopes

    assert all(op.spec.scope is None or op.spec.scope in scopes.ALL for op in OPERATIONS)


@pytest.fixture
def units(database, settings, clock) -> UnitsOfWork:
    return UnitsOfWork(database=database, clock=clock, secret_key=SECRET_KEY,
                       keyring=KeyRing([b"k" * 32]), settings=settings)


@pytest.fixture
def admin_actor(units, database, clock) -> Actor:
    from tokensmith.accounts.service import AccountService

    with database.session() as session:
        accounts = AccountService(session, clock)
        user = accounts.create_user(accounts.get_or_create_org("default"), "admin", "admin password 123",
                                    is_admin=True)
        return Actor.for_session(user_id=user.id, org_id=user.org_id, is_admin=True, username="admin")


def _events(database) -> list[AuditEvent]:
    with database.session() as session:
        return list(session.scalars(select(AuditEvent).order_by(AuditEvent.id)))


@pytest.mark.parametrize("name", CHANGING)
def test_each_state_changing_operation_records_exactly_its_one_event(name, units, admin_actor, database):
    prepare, call = CASES[name]
    made: dict[str, Any] = {}
    if prepare is not None:
        with units() as uow:
            prepare(uow, admin_actor, made)
    before = len(_events(database))
    with units() as uow:
        call(uow, admin_actor, made)
    new = _events(database)[before:]
    [op] = [op for op in OPERATIONS if op.spec.name == name]
    assert [e.action for e in new] == [op.spec.audit], name


def test_the_clis_admin_create_user_is_audited_with_the_operator_as_actor(tmp_path, monkeypatch):
    from tokensmith.cli.main import app

    monkeypatch.setenv("TOKENSMITH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("TOKENSMITH_DATABASE_URL", raising=False)
    result = CliRunner().invoke(app, ["admin", "--init", "create-user", "dave"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(app, ["admin", "create-token", "--user", "dave", "--name", "grafana"])
    assert result.exit_code == 0, result.output
    from tokensmith.db.database import Database

    database = Database(f"sqlite:///{tmp_path / 'data' / 'tokensmith.db'}")
    actions = [(e.action, e.actor_user.startswith("operator:"), '"via": "cli"' in (e.details or ""))
               for e in _events(database)]
    database.dispose()
    assert ("user.created", True, True) in actions and ("token.created", True, True) in actions


def test_the_architecture_page_names_every_operation():
    # docs/architecture.md's table is the scope table people read: a new operation must be in it.
    from pathlib import Path

    page = (Path(__file__).resolve().parent.parent / "docs" / "architecture.md").read_text()
    missing = [op.spec.name for op in OPERATIONS if op.spec.name.split(".", 1)[1] not in page]
    assert missing == []
