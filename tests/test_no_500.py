"""Bad input and same-name races get 4xx problems, never a 500; names read as what they are."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tests.pki import CA_PEM
from tokensmith import secrets
from tokensmith.accounts.service import AccountService
from tokensmith.clusters.service import ClusterService, VpcService, validate_server_url
from tokensmith.db.models import User
from tokensmith.errors import Conflict, InvalidInput
from tokensmith.validation import clean_name, clean_note

# --- input that used to reach a 500 ----------------------------------------------------------


def test_an_overflowing_pagination_cursor_is_a_422_problem(client, admin):
    cursor = base64.urlsafe_b64encode(b"v1:" + b"9" * 40).decode().rstrip("=")
    response = client.get(f"/v1/tokens?cursor={cursor}", headers=admin.headers)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "cursor"


@pytest.mark.parametrize("query", ["since=0001-01-01T00:00:00%2B14:00", "until=9999-12-31T23:59:59-14:00"])
def test_an_extreme_audit_date_is_a_422_problem(client, admin, query):
    response = client.get(f"/v1/audit-events?{query}", headers=admin.headers)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"


# --- same-name races: the other create commits between our check and our insert ---------------


def _commit_meanwhile(monkeypatch: pytest.MonkeyPatch, session: Session, other: Callable[[], Any]) -> None:
    """The service's look-up for a duplicate sees nothing; then ``other`` commits the same name."""
    real_scalar = session.scalar

    def scalar(*args: Any, **kwargs: Any) -> Any:
        found = real_scalar(*args, **kwargs)
        monkeypatch.setattr(session, "scalar", real_scalar)
        other()
        return found

    monkeypatch.setattr(session, "scalar", scalar)


@pytest.fixture
def org_admin(database, clock):
    with database.session() as session:
        accounts = AccountService(session, clock)
        user = accounts.create_user(accounts.get_or_create_org("default"), "root", None, is_admin=True)
    return type("Actor", (), {"user_id": user.id, "org_id": user.org_id, "is_admin": True})()


def test_a_cluster_created_twice_at_once_is_a_conflict_not_a_500(database, clock, monkeypatch, org_admin):
    def create(session: Session) -> Any:
        return ClusterService(session, clock).create(org_admin, "prod", "https://10.0.0.1:6443", CA_PEM, "eu")

    with pytest.raises(Conflict), database.session() as session:
        _commit_meanwhile(monkeypatch, session, lambda: _in_own_transaction(database, create))
        create(session)


def test_a_vpc_created_twice_at_once_is_a_conflict_not_a_500(database, clock, monkeypatch, org_admin):
    def create(session: Session) -> Any:
        return VpcService(session, clock).create(org_admin, "main", "eu", "10.0.0.0/16")

    with pytest.raises(Conflict), database.session() as session:
        _commit_meanwhile(monkeypatch, session, lambda: _in_own_transaction(database, create))
        create(session)


def test_a_user_created_twice_at_once_is_a_conflict_not_a_500(database, clock, monkeypatch, org_admin):
    def create(session: Session) -> Any:
        accounts = AccountService(session, clock)
        return accounts.create_user(accounts.get_or_create_org("default"), "zoe", None)

    with pytest.raises(Conflict), database.session() as session:
        accounts = AccountService(session, clock)
        org = accounts.get_or_create_org("default")
        _commit_meanwhile(monkeypatch, session, lambda: _in_own_transaction(database, create))
        accounts.create_user(org, "zoe", None)


def _in_own_transaction(database, work: Callable[[Session], Any]) -> None:
    with database.session() as other:
        work(other)


def test_database_errors_do_not_quote_the_rows_values(database, clock):
    """A 500's exception text can reach a log line: the engine hides bound parameters."""
    hash_value = "$argon2id$v=19$m=65536,t=3,p=4$c2VjcmV0LWhhc2gtdmFsdWU"
    with database.session() as session:
        accounts = AccountService(session, clock)
        org = accounts.get_or_create_org("default")
        accounts.create_user(org, "yara", None)
    with pytest.raises(IntegrityError) as caught, database.session() as session:
        session.add(User(public_id=secrets.public_id("usr"), org_id=org.id, username="yara",
                         password_hash=hash_value, is_admin=False, disabled=False, must_change_password=False,
                         created_at=clock.now()))
        session.flush()
    assert hash_value not in str(caught.value)


# --- names and notes -------------------------------------------------------------------------


@pytest.mark.parametrize("character", ["\u202e", "\u2066", "\u200b", "\u200d", "\u200f", "\ufeff"])
def test_names_and_notes_refuse_bidirectional_overrides_and_zero_width_characters(character):
    with pytest.raises(InvalidInput, match="bidirectional-override or zero-width"):
        clean_name(f"deploy{character}key")
    with pytest.raises(InvalidInput, match="bidirectional-override or zero-width"):
        clean_note(f"used by{character} ci")


def test_a_secret_in_fullwidth_characters_is_still_refused_in_a_name():
    secret = secrets.generate()
    fullwidth = "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in secret)
    with pytest.raises(InvalidInput, match="credential"):
        clean_name(f"backup {fullwidth}")


def test_names_in_any_language_are_still_accepted():
    assert clean_name("Déploiement 生产 🚀") == "Déploiement 生产 🚀"


def test_a_cluster_server_url_is_stored_exactly_as_validated():
    with pytest.raises(InvalidInput):
        validate_server_url("https://10.0.0.1:6443\n.evil.example")  # urlsplit would drop the newline
    with pytest.raises(InvalidInput):
        validate_server_url("https://10.0.0.1:6443/\tx")
    assert validate_server_url("  https://10.0.0.1:6443/  ") == "https://10.0.0.1:6443"
