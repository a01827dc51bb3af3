"""The use-case layer: one function per use case, the same behind every door.

Doors (the REST API in ``tokensmith.api.routes``, the console in ``tokensmith.console``, the CLI's
direct-database ``admin`` commands) parse input, build an :class:`~tokensmith.usecases.actor.Actor`
for the credential they authenticated, open a unit of work and call an operation here; they
render what it returns. Each operation (``@operation`` in ``base.py``) declares the one scope it
needs and the audit event it records, and the decorator enforces both; the rules themselves live
in the domain services below (``tokens``, ``accounts``, ``clusters``, ``objectstore`` ...).

    with ctx.unit_of_work() as uow:
        issued = tokens.issue_token(uow, actor, TokenRequest(name="ci", expiration="30d"))

``OPERATIONS`` lists every operation; the docs' scope table and the audit-completeness test read it.
"""

from __future__ import annotations

from tokensmith.usecases import access_keys, auth, clusters, device, federation, org, tokens, users
from tokensmith.usecases.actor import Actor, RequestContext
from tokensmith.usecases.base import Operation, OperationSpec, UnitOfWork, operation

MODULES = (tokens, auth, org, users, clusters, access_keys, device, federation)


def _collect() -> tuple[Operation, ...]:
    found = [value for module in MODULES for value in vars(module).values() if isinstance(value, Operation)]
    return tuple(sorted(set(found), key=lambda op: op.spec.name))


OPERATIONS = _collect()

__all__ = ["OPERATIONS", "Actor", "Operation", "OperationSpec", "RequestContext", "UnitOfWork", "operation"]
