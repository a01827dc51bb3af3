"""Rich tables and one-line errors; JSON when asked."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def print_json(data: Any) -> None:
    out.print_json(json.dumps(data))


def when(value: str | None, empty: str = "never") -> str:
    if not value:
        return empty
    moment = datetime.fromisoformat(value)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def tokens_table(tokens: list[dict[str, Any]]) -> Table:
    table = Table(title="Tokens", show_lines=False)
    for column in ("Name", "ID", "Hint", "Created", "Expires", "Last used", "Clusters"):
        table.add_column(column)
    for t in tokens:
        expires = when(t["expires_at"]) + (" (expired)" if t.get("expired") else "")
        # Each cluster with the token's access level there (issue 16), as --cluster takes it: prod=view.
        clusters = " ".join(f"{c['name']}={c.get('level', 'view')}" for c in t.get("clusters", [])) or "—"
        table.add_row(t["name"], t["id"], f"…{t['hint']}", when(t["created_at"]), expires, when(t["last_used_at"]),
                      clusters)
    return table
