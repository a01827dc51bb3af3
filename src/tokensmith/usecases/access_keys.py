"""S3 access keys: minted with a token (never outliving it when temporary), listed, revoked."""

from __future__ import annotations

from tokensmith.db.models import AccessKey, Token
from tokensmith.errors import Forbidden
from tokensmith.objectstore.minters import MINT_SCOPE, TokenMinter, minter_for
from tokensmith.objectstore.service import AccessKeyService, CreatedAccessKey
from tokensmith.pagination import DEFAULT_LIMIT, Page
from tokensmith.usecases.actor import Actor
from tokensmith.usecases.base import UnitOfWork, operation


def _keys(uow: UnitOfWork) -> AccessKeyService:
    return AccessKeyService(uow.session, uow.clock, uow.keyring)


def _minter(uow: UnitOfWork, actor: Actor, token: str | None) -> TokenMinter:
    """The token that mints: the calling token itself over the API; one the person picks at the console."""
    if actor.kind == "token":
        if token is not None and token != actor.token_public_id:
            raise Forbidden("a token mints access keys with itself only")
        own = uow.session.get(Token, actor.token_id)
        assert own is not None  # it just authenticated
        return TokenMinter(actor.user_id, actor.org_id, actor.is_admin, own.id, own.public_id, own.name,
                           own.expires_at)
    if token is None:
        raise Forbidden("choose the token that mints the key")
    return minter_for(uow.session, actor, token, uow.clock.now())


@operation(MINT_SCOPE, audit="access_key.created", manages_credentials=True)
def mint_access_key(
    uow: UnitOfWork, actor: Actor, duration_seconds: object, name: str | None = None, *, token: str | None = None,
) -> CreatedAccessKey:
    """Mint a key (secret returned once): permanent for 0, else temporary and never past its token's expiry.

    Raises InvalidInput (duration outside the organization's range, name, token not usable).
    """
    minter = _minter(uow, actor, token)
    created = _keys(uow).create(minter, duration_seconds, name)
    uow.record(actor, "access_key.created", target=created.key.access_key_id,
               details={"name": created.key.name, "temporary": created.key.expires_at is not None,
                        "minted_by_token": minter.token_public_id})
    return created


@operation("object-storage:write", audit="access_key.deleted", manages_credentials=True)
def delete_access_key(uow: UnitOfWork, actor: Actor, access_key_id: str) -> AccessKey:
    key = _keys(uow).revoke(actor, access_key_id)
    uow.record(actor, "access_key.deleted", target=key.access_key_id)
    return key


@operation("object-storage:read")
def list_access_keys(uow: UnitOfWork, actor: Actor, *, cursor: str | None = None,
                     limit: int = DEFAULT_LIMIT) -> Page[AccessKey]:
    return _keys(uow).list(actor, cursor=cursor, limit=limit)


@operation("object-storage:read")
def get_access_key(uow: UnitOfWork, actor: Actor, access_key_id: str) -> AccessKey:
    return _keys(uow).get(actor, access_key_id)
