"""``tokensmith cluster list`` and ``tokensmith cluster credentials list|revoke``, over the REST API.

Revoking a webhook credential is what an operator does when an API server's host is rebuilt or
compromised; it should not need database access, so these commands use the caller's login.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from tokensmith.cli.client import ApiClient
from tokensmith.cli.output import out, print_json, when

app = typer.Typer(help="Your organization's clusters and their webhook credentials.", no_args_is_help=True)
credentials_app = typer.Typer(help="The credentials clusters' API servers use for TokenReview.",
                              no_args_is_help=True)
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]
ClusterArg = Annotated[str, typer.Argument(help="The cluster's name or id.")]


def list_clusters(as_json: JsonFlag = False) -> None:
    """List the organization's clusters."""
    items = ApiClient.from_config().get_all("/v1/clusters")
    if as_json:
        print_json(items)
        return
    if not items:
        out.print("No clusters yet. An admin adds them in the console or with POST /v1/clusters.")
        return
    table = Table(title="Clusters")
    for column in ("Name", "ID", "Server", "Region"):
        table.add_column(column)
    for c in items:
        table.add_row(c["name"], c["id"], c["server"], c.get("region") or "")
    out.print(table)


def _credentials_path(cluster: str) -> str:
    return f"/v1/clusters/{cluster}/webhook-credentials"


def list_credentials(cluster: ClusterArg, as_json: JsonFlag = False) -> None:
    """List a cluster's live webhook credentials (never their secrets)."""
    items: list[dict[str, Any]] = ApiClient.from_config().get(_credentials_path(cluster))
    if as_json:
        print_json(items)
        return
    table = Table(title=f"Webhook credentials of {cluster}")
    for column in ("ID", "Hint", "Created", "Last used"):
        table.add_column(column)
    for c in items:
        table.add_row(c["id"], f"…{c['hint']}", when(c["created_at"]), when(c["last_used_at"]))
    out.print(table)


def revoke_credential(
    cluster: ClusterArg, credential: Annotated[str, typer.Argument(help="The credential's id (whc_...).")],
) -> None:
    """Revoke a webhook credential: the API server using it is refused from its next TokenReview."""
    ApiClient.from_config().delete(f"{_credentials_path(cluster)}/{credential}")
    out.print(f"revoked {credential}")


def register(friendly: Any) -> typer.Typer:
    """Attach the commands, wrapped in the CLI's error handling, and return the cluster group."""
    app.command("list")(friendly(list_clusters))
    credentials_app.command("list")(friendly(list_credentials))
    credentials_app.command("revoke")(friendly(revoke_credential))
    app.add_typer(credentials_app, name="credentials")
    return app
