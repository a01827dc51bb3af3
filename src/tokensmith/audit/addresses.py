"""First use of a token from a new client address, audited once without a write per request.

Each process remembers the (token, address) pairs it has seen; only an unseen pair touches the
database, where the primary key of ``token_addresses`` decides, across replicas, which request
was the first and writes the audit event.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Any, Final

from sqlalchemy.exc import IntegrityError

from tokensmith import audit
from tokensmith.db.models import TokenAddress

REMEMBERED: Final = 50_000
log = logging.getLogger("tokensmith.audit")


class AddressBook:
    def __init__(self, size: int = REMEMBERED) -> None:
        self._seen: OrderedDict[tuple[int, str], None] = OrderedDict()
        self._lock = threading.Lock()
        self._size = size

    def _remember(self, key: tuple[int, str]) -> bool:
        """True if ``key`` was already known to this process."""
        with self._lock:
            if key in self._seen:
                self._seen.move_to_end(key)
                return True
            self._seen[key] = None
            if len(self._seen) > self._size:
                self._seen.popitem(last=False)
            return False

    def known(self, token_id: int, ip: str | None) -> bool:
        """Whether ``note`` would do nothing for this pair (no I/O: the fast paths ask before noting)."""
        return ip is None or (token_id, ip) in self._seen

    def note(self, context: Any, identity: Any, request: Any) -> bool:
        """Record a first use of ``identity``'s token from the request's address; True if it was new."""
        ip, agent = audit.client_of(request)
        if ip is None or self._remember((identity.token_id, ip)):
            return False
        now = context.clock.now()
        try:
            with context.database.session() as session:
                session.add(TokenAddress(token_id=identity.token_id, ip=ip[:64], first_seen_at=now))
                session.flush()
                audit.record(
                    session, "token.used_from_new_ip", at=now, org_id=identity.org_id, actor_user=identity.username,
                    actor_token=identity.token_public_id, client_ip=ip, user_agent=agent,
                    target=identity.token_public_id,
                )
        except IntegrityError:
            return False  # seen before (by another process, or before a restart)
        except Exception:  # auditing must never turn a valid request into an error
            log.exception("could not record a first use from a new address")
            with self._lock:
                self._seen.pop((identity.token_id, ip), None)
            return False
        return True
