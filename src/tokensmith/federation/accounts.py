"""Service accounts: organization-owned, non-human principals that own tokens.

A service account is a ``users`` row of kind ``service`` with a ``svc_`` id and no password: it
cannot sign in, so it acts only through the tokens an admin mints for it or that a trust policy
exchanges. Because it is a user, everything that works for a user's token — verification, the
cache and its invalidation, scopes cut to the owner's permissions, cluster grants — works for
its tokens unchanged. It is never an admin unless created as one explicitly, and its tokens do
not depend on the person who created it: disabling that person changes nothing for them.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from tokensmith import secrets
from tokensmith.clock import Clock
from tokensmith.db.models import AccessKey, Organization, Token, TrustPolicy, User
from tokensmith.errors import Conflict, NotFound
from tokensmith.validation import clean_identifier

SERVICE: Final = "service"  # users.kind; people are "person"


class ServiceAccountService:
    def __init__(self, session: Session, clock: Clock) -> None:
        self.session = session
        self.clock = clock

    def create(self, org_id: int, name: str, *, is_admin: bool = False) -> User:
        """A new service account; Conflict if the name is taken (names are unique like user names)."""
        name = clean_identifier(name, "name")
        if self.session.scalar(select(User.id).where(User.username == name)) is not None:
            raise Conflict(f"the name {name!r} is taken by a user or service account")
        org = self.session.get(Organization, org_id)
        assert org is not None
        account = User(public_id=secrets.public_id("svc"), org_id=org.id, username=name, password_hash=None,
                       is_admin=is_admin, disabled=False, must_change_password=False, kind=SERVICE,
                       created_at=self.clock.now())
        self.session.add(account)
        self.session.flush()
        return account

    def list(self, org_id: int) -> list[User]:
        return list(self.session.scalars(
            select(User).where(User.org_id == org_id, User.kind == SERVICE).order_by(User.username)))

    def get(self, org_id: int, ref: str) -> User:
        """A service account of the organization by id or name; NotFound otherwise (a person is not one)."""
        account = self.session.scalar(select(User).where(
            User.org_id == org_id, User.kind == SERVICE, (User.public_id == ref) | (User.username == ref)))
        if account is None:
            raise NotFound(f"service account {ref!r} not found")
        return account

    def set_disabled(self, org_id: int, ref: str, *, disabled: bool) -> User:
        """Disable (its tokens stop at once, exchanges are refused) or enable it again."""
        account = self.get(org_id, ref)
        account.disabled = disabled
        self.session.flush()
        return account

    def delete(self, org_id: int, ref: str) -> tuple[User, int]:
        """Delete it with its tokens, S3 keys and trust policies; returns it and how many tokens went.

        The audit log keeps its id and name (events store them as text).
        """
        account = self.get(org_id, ref)
        self.session.execute(delete(AccessKey).where(AccessKey.user_id == account.id))
        tokens = list(self.session.scalars(select(Token).where(Token.user_id == account.id)))
        for token in tokens:  # through the ORM: grants go with them, and verification caches hear of it
            self.session.delete(token)
        for policy in self.session.scalars(select(TrustPolicy).where(TrustPolicy.service_account_id == account.id)):
            self.session.delete(policy)
        self.session.flush()
        self.session.delete(account)
        self.session.flush()
        return account, len(tokens)
