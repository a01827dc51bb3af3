"""TokenReview denials in the audit log, coalesced so that a denial storm cannot flood it.

Two actions, both with outcome ``denied``:

* ``kube.tokenreview.denied``: a cluster's API server asked about a token and tokensmith said no.
  Target: the cluster's id. Actor: the calling webhook credential (``webhook:whc_...``). Details:
  ``reason`` (unknown token, token expired, token revoked, user disabled, rotated-out secret,
  malformed token, token does not grant this cluster, token lacks the kubernetes scope, wrong
  audience), ``token`` (the token's public id when it is known and belongs to the cluster's
  organization, else ``"unknown"``; never the secret), ``count``, ``first_at``, ``last_at`` and
  up to five ``client_ips``.
* ``kube.webhook_credential.refused``: the webhook credential itself failed. Target: the cluster's
  id when the URL names an existing cluster by id, else ``"unknown"`` (with what was asked, cut to 64
  characters, in ``cluster_ref``). Reason: ``invalid webhook credential``, or ``no webhook credential
  sent (is the webhook URL https?)`` when the call carried no Authorization header at all.

**Coalescing.** A key is (action, cluster, token-or-"unknown", reason). The first denial of a key
is written at once, with ``count`` 1, so an operator sees an attack begin. Further denials of the
same key in the following minute are only counted in memory. Once that minute has passed they are
written as one event whose ``count`` says how many it stands for: together with the next denial of
that key, or on the next denial of any other key, on ``flush()``, or at shutdown. So each process
writes at most one event per key per minute, however large the storm, and the counts add up to the
number of denials. Memory is bounded: at most ``MAX_KEYS`` keys; the oldest is written out and
forgotten when a new one needs room. Unknown tokens all share the key "unknown", so random guesses
cannot multiply the keys. Coalesced events keep up to five client addresses.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import or_, select

from tokensmith import audit, secrets
from tokensmith.clock import Clock
from tokensmith.db.database import Database
from tokensmith.db.models import Cluster, Token, User
from tokensmith.kube.callers import WebhookCaller
from tokensmith.tokens.expiration import is_expired
from tokensmith.verify.core import EXPIRED, INVALID

DENIED_ACTION: Final = "kube.tokenreview.denied"
REFUSED_ACTION: Final = "kube.webhook_credential.refused"
WINDOW: Final = timedelta(minutes=1)
MAX_KEYS: Final = 10_000
MAX_IPS: Final = 5
UNKNOWN: Final = "unknown"

MALFORMED = "malformed token"
UNKNOWN_TOKEN = "unknown token"  # noqa: S105 - a reason, not a secret
REVOKED = "token revoked"
USER_DISABLED = "user disabled"
ROTATED_OUT = "rotated-out secret"
BAD_CREDENTIAL = "invalid webhook credential"
# No Authorization header at all: what an API server does with an http:// webhook URL (it sends the
# credential only over https), told apart from a revoked or wrong one.
NO_CREDENTIAL = "no webhook credential sent (is the webhook URL https?)"
# Over the cluster's ceiling of invalid tokens (api/routes/kube.py): answered from the cache only.
CLUSTER_LIMITED = "too many invalid tokens from this cluster"

log = logging.getLogger("tokensmith.audit")


@dataclass(frozen=True)
class Denial:
    """One refusal, as the audit log needs it. ``cluster`` and ``token`` are public ids or "unknown"."""

    action: str
    cluster: str
    org_id: int | None
    token: str
    reason: str
    credential: str | None
    client_ip: str | None
    user_agent: str | None
    extra: tuple[tuple[str, str], ...] = ()

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.action, self.cluster, self.token, self.reason)


@dataclass
class _Slot:
    written_at: datetime  # when the last event for this key was written
    pending: int = 0
    first_at: datetime | None = None
    last_at: datetime | None = None
    last: Denial | None = None
    ips: list[str] = field(default_factory=list)


class DenialLog:
    """Writes denials to the audit log, at most one event per key per ``window`` (see module doc)."""

    def __init__(self, database: Database, clock: Clock, *, window: timedelta = WINDOW,
                 max_keys: int = MAX_KEYS) -> None:
        self.database = database
        self.clock = clock
        self.window = window
        self.max_keys = max_keys
        self._slots: OrderedDict[tuple[str, str, str, str], _Slot] = OrderedDict()
        self._lock = threading.Lock()

    def note(self, denial: Denial) -> None:
        """Record ``denial``: written now if its key had no event in the last window, else counted."""
        now = self.clock.now()
        to_write: list[tuple[Denial, dict[str, Any]]] = []
        with self._lock:
            slot = self._slots.get(denial.key)
            if slot is None or now - slot.written_at >= self.window:
                facts: dict[str, Any] = {"count": 1, "first_at": now, "last_at": now}
                if slot is not None and slot.pending:  # the previous window's tail joins this event
                    _, tail = self._take(slot)
                    ips = [ip for ip in tail.get("client_ips", []) if ip != denial.client_ip][:MAX_IPS - 1]
                    facts = {**tail, "count": tail["count"] + 1, "last_at": now,
                             **({"client_ips": ips} if ips else {})}
                self._slots[denial.key] = _Slot(written_at=now)
                self._slots.move_to_end(denial.key)
                to_write.append((denial, facts))
            else:
                slot.pending += 1
                slot.first_at = slot.first_at or now
                slot.last_at = now
                slot.last = denial
                if denial.client_ip and denial.client_ip not in slot.ips and len(slot.ips) < MAX_IPS:
                    slot.ips.append(denial.client_ip)
            to_write += self._due(now, force=False)
            while len(self._slots) > self.max_keys:
                _key, oldest = self._slots.popitem(last=False)
                if oldest.pending:
                    to_write.append(self._take(oldest))
        self._write(to_write)

    def flush(self, force: bool = False) -> int:
        """Write the counts whose window has passed (every count with ``force``: shutdown). Returns events."""
        with self._lock:
            to_write = self._due(self.clock.now(), force=force)
        self._write(to_write)
        return len(to_write)

    def _due(self, now: datetime, *, force: bool) -> list[tuple[Denial, dict[str, Any]]]:
        due = []
        for slot in self._slots.values():
            if slot.pending and (force or now - slot.written_at >= self.window):
                due.append(self._take(slot))
                slot.written_at = now  # this event is the key's one for the next window
        return due

    @staticmethod
    def _take(slot: _Slot) -> tuple[Denial, dict[str, Any]]:
        assert slot.last is not None
        facts: dict[str, Any] = {"count": slot.pending, "first_at": slot.first_at, "last_at": slot.last_at,
                                 "coalesced": True}
        if slot.ips:
            facts["client_ips"] = list(slot.ips)
        denial = slot.last
        slot.pending, slot.first_at, slot.last_at, slot.last, slot.ips = 0, None, None, None, []
        return denial, facts

    def _write(self, events: list[tuple[Denial, dict[str, Any]]]) -> None:
        if not events:
            return
        now = self.clock.now()
        try:
            with self.database.session() as session:
                for denial, facts in events:
                    audit.record(
                        session, denial.action, at=now, org_id=denial.org_id,
                        actor_user=f"webhook:{denial.credential}" if denial.credential else None,
                        client_ip=denial.client_ip, user_agent=denial.user_agent, target=denial.cluster,
                        outcome=audit.DENIED,
                        details={"reason": denial.reason, "token": denial.token, **dict(denial.extra), **facts},
                    )
        except Exception:  # auditing must never turn an answer to an API server into an error
            log.exception("could not record %d TokenReview denial event(s)", len(events))


def token_behind(session: Any, secret: str, secret_key: bytes, org_id: int, reason: str,
                 now: datetime) -> tuple[str, str]:
    """(token public id or "unknown", precise reason) for a secret the verifier refused with ``reason``.

    The verifier answers a neutral "invalid token"; the audit log may say more, to the cluster's
    own admins: revoked, expired, disabled user, rotated out. A token of another organization is
    "unknown", as it would be to them anywhere else.
    """
    if reason not in (INVALID, EXPIRED):
        return UNKNOWN, reason
    if not secrets.is_well_formed(secret):
        return UNKNOWN, MALFORMED
    digest = secrets.digest(secret, secret_key)
    row = session.execute(
        select(Token, User).join(User, User.id == Token.user_id)
        .where(or_(Token.secret_digest == digest, Token.previous_secret_digest == digest))
    ).first()
    if row is None or row[0].org_id != org_id:
        return UNKNOWN, UNKNOWN_TOKEN
    token, user = row
    if token.revoked_at is not None:
        return token.public_id, REVOKED
    if is_expired(token.expires_at, now):
        return token.public_id, EXPIRED
    if user.disabled:
        return token.public_id, USER_DISABLED
    if not secrets.digests_match(token.secret_digest, digest):
        return token.public_id, ROTATED_OUT
    return token.public_id, reason


def cluster_named(session: Any, cluster_ref: str) -> Cluster | None:
    """The cluster whose public id is ``cluster_ref`` (names are per organization: not looked up)."""
    return session.scalar(select(Cluster).where(Cluster.public_id == cluster_ref[:64]))


# --- what the TokenReview route calls -------------------------------------------------------------


def record_refused_credential(request: Any, cluster_ref: str, reason: str = BAD_CREDENTIAL) -> None:
    """The webhook credential of a TokenReview call failed (missing, malformed, unknown, revoked, other cluster)."""
    context = request.app.state.context
    ip, agent = audit.client_of(request)
    with context.database.session() as session:
        cluster = cluster_named(session, cluster_ref)
        target, org_id = (cluster.public_id, cluster.org_id) if cluster is not None else (UNKNOWN, None)
    extra = () if cluster is not None else (("cluster_ref", cluster_ref[:64]),)
    request.app.state.context.denials.note(
        Denial(REFUSED_ACTION, target, org_id, UNKNOWN, reason, None, ip, agent, extra))


def record_limited_review(request: Any, caller: WebhookCaller) -> None:
    """A review refused because the cluster is over its ceiling of invalid tokens: no token lookup."""
    ip, agent = audit.client_of(request)
    request.app.state.context.denials.note(Denial(DENIED_ACTION, caller.cluster_public_id, caller.org_id, UNKNOWN,
                                          CLUSTER_LIMITED, caller.credential_public_id, ip, agent))


def record_denied_review(request: Any, caller: WebhookCaller, secret: str, reason: str,
                         identity: Any | None) -> None:
    """A TokenReview was answered ``authenticated: false`` for ``reason``; ``identity`` if the token verified."""
    context = request.app.state.context
    ip, agent = audit.client_of(request)
    if identity is not None:
        token = identity.token_public_id if identity.org_id == caller.org_id else UNKNOWN
    else:
        with context.database.session() as session:
            token, reason = token_behind(session, secret, context.secret_key, caller.org_id, reason,
                                         context.clock.now())
    request.app.state.context.denials.note(Denial(DENIED_ACTION, caller.cluster_public_id, caller.org_id, token,
                                          reason, caller.credential_public_id, ip, agent))
