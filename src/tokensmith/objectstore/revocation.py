"""What happens to S3 access keys when the token that minted them is deleted.

Temporary keys die with their token at once; permanent keys survive unless the caller asks
for them too. Called by TokenService.revoke, so every door that deletes a token applies it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, func, select, update
from sqlalchemy.orm import Session

from tokensmith.db.models import AccessKey


@dataclass(frozen=True)
class MintedKeysOutcome:
    revoked: int  # keys revoked now
    surviving: int  # permanent keys minted by the token that are still live


def revoke_keys_minted_by(
    session: Session, token_id: int, now: datetime, *, include_permanent: bool
) -> MintedKeysOutcome:
    """Revoke the live keys ``token_id`` minted: the temporary ones always, permanent ones when asked."""
    live = (AccessKey.token_id == token_id) & AccessKey.revoked_at.is_(None)
    target = live if include_permanent else live & AccessKey.expires_at.is_not(None)
    # A bulk UPDATE answers with a cursor result, which has the row count.
    revoked = cast(CursorResult[Any], session.execute(
        update(AccessKey).where(target).values(revoked_at=now).execution_options(synchronize_session=False)
    )).rowcount
    surviving = session.scalar(select(func.count()).select_from(AccessKey).where(live)) or 0
    return MintedKeysOutcome(revoked=revoked or 0, surviving=surviving)


def surviving_permanent_keys_by_token(session: Session, token_ids: list[int]) -> dict[int, int]:
    """How many live permanent keys each token minted (what deleting it would leave behind), in one
    query; tokens without any are left out."""
    if not token_ids:
        return {}
    rows = session.execute(
        select(AccessKey.token_id, func.count()).where(
            AccessKey.token_id.in_(token_ids), AccessKey.revoked_at.is_(None), AccessKey.expires_at.is_(None)
        ).group_by(AccessKey.token_id)
    )
    return {token_id: count for token_id, count in rows if token_id is not None}
