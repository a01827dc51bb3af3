"""Rich tables and one-line errors; JSON when asked."""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from tokensmith import durations

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table


class LazyConsole:
    """A rich ``Console`` made on its first use. Importing rich costs every CLI process ~50 ms of CPU, and
    kubectl's ``kube-credential`` calls (answered from the cache, on every kubectl run) print nothing
    through it. A real process resolves stdout, the terminal and its colours when it first prints, as a
    Console made at import would: nothing replaces them in between."""

    def __init__(self, *, stderr: bool = False) -> None:
        self._stderr = stderr

    @functools.cached_property
    def console(self) -> Console:
        from rich.console import Console

        return Console(stderr=self._stderr, highlight=False, soft_wrap=True)

    def print(self, *objects: Any, **options: Any) -> None:
        self.console.print(*objects, **options)

    @property
    def is_terminal(self) -> bool:
        return self.console.is_terminal

    @property
    def width(self) -> int:
        return self.console.width


out = LazyConsole()
err = LazyConsole(stderr=True)


def new_table(**options: Any) -> Table:
    """A rich ``Table``; rich is imported by the commands that print one (see ``LazyConsole``)."""
    from rich.table import Table

    return Table(**options)


def print_json(data: Any) -> None:
    out.console.print_json(json.dumps(data))


def when(value: str | None, empty: str = "never") -> str:
    if not value:
        return empty
    moment = datetime.fromisoformat(value)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def expiry_text(value: str | None, now: datetime | None = None) -> str:
    """``2027-01-31 00:00 UTC (in 30 days)``; ``never`` for a token that does not expire."""
    if not value:
        return "never"
    moment = datetime.fromisoformat(value)
    return f"{when(value)} ({durations.relative(moment, now or datetime.now(UTC))})"


def _day(value: str | None, empty: str = "never") -> str:
    return datetime.fromisoformat(value).astimezone(UTC).strftime("%Y-%m-%d") if value else empty


def tokens_table(
    tokens: list[dict[str, Any]], own_id: str | None = None, wide: bool = False, owners: bool = False
) -> Table:
    """Tokens with full ids: the id never wraps or shortens; the other columns wrap to fit 80 columns.

    Borderless, as ``kubectl get`` and ``gh`` print lists, so the columns keep the width.
    """
    mine = any(t["id"] == own_id for t in tokens)
    table = new_table(box=None, pad_edge=False, show_edge=False, header_style="bold",
                  caption="* the token this CLI signs in with" if mine else None, caption_justify="left")
    longest = max(len(t["id"]) for t in tokens) + (2 if mine else 0) if tokens else 0
    table.add_column("ID", no_wrap=True, min_width=longest)
    if owners:
        table.add_column("Owner", overflow="fold", no_wrap=wide)
    table.add_column("Name", overflow="fold", no_wrap=wide)
    table.add_column("Note", overflow="fold", no_wrap=wide)
    table.add_column("Expires", no_wrap=True)  # a date never wraps: "2026-12-3 1" reads wrong
    table.add_column("Last used", no_wrap=True)
    table.add_column("Clusters", overflow="fold", no_wrap=wide)
    if wide:
        table.add_column("Hint", no_wrap=True)
        table.add_column("Created", no_wrap=True)
    for t in tokens:
        # Days only in 80 columns (`token show` has the time and how long is left).
        expires = when(t["expires_at"]) if wide else _day(t["expires_at"])
        if t.get("expired"):
            expires = "expired " + _day(t["expires_at"])
        row = [t["id"] + (" *" if t["id"] == own_id else ""), *([t["owner"]["username"]] if owners else []),
               t["name"], t.get("note") or "", expires,
               when(t["last_used_at"]) if wide else _day(t["last_used_at"]),
               # Each cluster with the token's access level there, as --cluster takes it: prod=view.
               ", ".join(f"{c['name']}={c.get('level', 'view')}" for c in t.get("clusters") or []) or "-"]
        if wide:
            row += [f"…{t['hint']}", when(t["created_at"])]
        table.add_row(*row)
    return table
