"""``tokensmith cluster create|list|show|delete|set-audience`` and ``cluster credentials list|revoke``, over the API.

Revoking a webhook credential is what an operator does when an API server's host is rebuilt or
compromised; it should not need database access, so these commands use the caller's login.
"""

# No `from __future__ import annotations` in a module that declares commands: see tokensmith/cli/__init__.py.

from pathlib import Path
from typing import Annotated, Any

import typer

from tokensmith.cli.client import ApiClient, CliError
from tokensmith.cli.output import new_table, out, print_json, when

app = typer.Typer(help="Your organization's clusters (admins add and remove them) and their webhook credentials.",
                  no_args_is_help=True)
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
        out.print("No clusters yet. An admin adds one with: tokensmith cluster create NAME --server URL --ca-file F")
        return
    table = new_table(title="Clusters")
    for column in ("Name", "ID", "Server", "Region"):
        table.add_column(column)
    for c in items:
        table.add_row(c["name"], c["id"], c["server"], c.get("region") or "")
    out.print(table)


def create_cluster(
    name: Annotated[str, typer.Argument(help="A name, unique in your organization.")],
    server: Annotated[str, typer.Option(help="The API server's https URL.")],
    ca_file: Annotated[Path, typer.Option(help="PEM file of the API server's CA certificate(s).")],
    region: Annotated[str, typer.Option(help="Where it runs, e.g. eu-west-1.")] = "default",
    vpc: Annotated[str | None, typer.Option(help="A VPC name or id.")] = None,
    audience: Annotated[str | None, typer.Option(
        help="The audience TokenReviews ask for (one of the API server's --api-audiences). Default: --server.")]
    = None,
    as_json: JsonFlag = False,
) -> None:
    """Add a cluster (admins)."""
    try:
        ca = ca_file.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read --ca-file {ca_file}: {exc}", 2) from None
    body: dict[str, Any] = {"name": name, "server": server, "certificate_authority": ca, "region": region}
    if vpc is not None:
        body["vpc"] = vpc
    if audience is not None:
        body["audience"] = audience
    created = ApiClient.from_config().post("/v1/clusters", body)
    if as_json:
        print_json(created)
        return
    out.print(f"created cluster {created['name']} ({created['id']}) at {created['server']}")


def show_cluster(cluster: ClusterArg, as_json: JsonFlag = False) -> None:
    """Show one cluster."""
    found = ApiClient.from_config().get(f"/v1/clusters/{cluster}")
    if as_json:
        print_json(found)
        return
    for label in ("id", "name", "server", "region", "vpc", "audience", "created_at"):
        out.print(f"{label + ':':<12}{found.get(label) or '-'}")


def delete_cluster(cluster: ClusterArg) -> None:
    """Delete a cluster (admins): tokens stop granting it and its webhook credentials stop working."""
    ApiClient.from_config().delete(f"/v1/clusters/{cluster}")
    out.print(f"deleted cluster {cluster}")


def set_audience(
    cluster: ClusterArg,
    audience: Annotated[str, typer.Argument(help="The new audience; '' resets it to the server URL.")],
    as_json: JsonFlag = False,
) -> None:
    """Change the audience TokenReviews for this cluster must ask for (admins)."""
    changed = ApiClient.from_config().patch(f"/v1/clusters/{cluster}", {"audience": audience or None})
    if as_json:
        print_json(changed)
        return
    out.print(f"cluster {changed['name']} now expects audience {changed['audience']}")


def _credentials_path(cluster: str) -> str:
    return f"/v1/clusters/{cluster}/webhook-credentials"


def list_credentials(cluster: ClusterArg, as_json: JsonFlag = False) -> None:
    """List a cluster's live webhook credentials (never their secrets)."""
    items: list[dict[str, Any]] = ApiClient.from_config().get(_credentials_path(cluster))
    if as_json:
        print_json(items)
        return
    if not items:
        out.print(f"No webhook credentials for {cluster}. Mint one with: tokensmith admin cluster webhook-config")
        return
    table = new_table(title=f"Webhook credentials of {cluster}")
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
    app.command("create")(friendly(create_cluster))
    app.command("list")(friendly(list_clusters))
    app.command("show")(friendly(show_cluster))
    app.command("delete")(friendly(delete_cluster))
    app.command("set-audience")(friendly(set_audience))
    credentials_app.command("list")(friendly(list_credentials))
    credentials_app.command("revoke")(friendly(revoke_credential))
    app.add_typer(credentials_app, name="credentials")
    return app
