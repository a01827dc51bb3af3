"""``tokensmith``: run the server, manage tokens, and administer the database directly.

Exit codes: 0 success, 1 the request failed, 2 bad usage, 3 not logged in or not authorized.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer

from tokensmith.cli import access_keys, clusters, federation
from tokensmith.cli.client import ApiClient, CliError
from tokensmith.cli.config import ClientConfig
from tokensmith.cli.friendly import friendly
from tokensmith.cli.kube import cluster_app, kubeconfig_app
from tokensmith.cli.output import err, out, print_json, tokens_table
from tokensmith.usecases import Actor, UnitOfWork

app = typer.Typer(help="Self-hosted API access tokens.", no_args_is_help=True, add_completion=False)
token_app = typer.Typer(help="Create, list and delete your tokens.", no_args_is_help=True)
admin_app = typer.Typer(help="Act on the database directly (bootstrapping and scripts).", no_args_is_help=True)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
app.add_typer(token_app, name="token")
app.add_typer(admin_app, name="admin")
app.add_typer(db_app, name="db")
app.add_typer(kubeconfig_app, name="kubeconfig")
admin_app.add_typer(cluster_app, name="cluster")



@app.command()
@friendly
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 1,
) -> None:
    """Run the server (SQLite in ./.tokensmith unless TOKENSMITH_DATABASE_URL is set)."""
    from tokensmith.server import run

    run(host=host, port=port, workers=workers)


@db_app.command("upgrade")
@friendly
def db_upgrade() -> None:
    """Apply database migrations."""
    from tokensmith.config import Settings
    from tokensmith.db.database import Database
    from tokensmith.db.migrate import current_revision, upgrade

    settings = Settings.from_env()
    settings.ensure_data_dir()
    database = Database(settings.database_url)
    upgrade(database.engine)
    out.print(f"database at revision {current_revision(database.engine)}")


@app.command()
@friendly
def login(
    url: Annotated[str, typer.Option(help="The tokensmith server, e.g. http://127.0.0.1:8000")],
    username: Annotated[str, typer.Option(prompt=True)],
    password: Annotated[str, typer.Option(prompt=True, hide_input=True)],
    expires_in: Annotated[str, typer.Option(help="Lifetime of the CLI's token.")] = "30d",
) -> None:
    """Sign in with a password; stores a new token in ~/.config/tokensmith/config.toml (0600)."""
    import socket

    client = ApiClient(url)
    created = client.post(
        "/v1/auth/token",
        {"username": username, "password": password, "name": f"cli@{socket.gethostname()}"[:100],
         "expiration": expires_in},
    )
    path = ClientConfig(url=url, token=created["secret"]).save()
    out.print(f"logged in as {username}; token {created['token']['id']} stored in {path}")


@app.command()
@friendly
def whoami(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Show the user, organization and token you are using."""
    me = ApiClient.from_config().get("/v1/whoami")
    if as_json:
        print_json(me)
        return
    admin = " (admin)" if me["user"]["is_admin"] else ""
    out.print(f"{me['user']['username']}{admin} in {me['organization']['name']}, token {me['token']['id']}")


@token_app.command("create")
@friendly
def token_create(
    name: Annotated[str, typer.Option(help="A name to recognise the token by.")],
    expires_in: Annotated[str, typer.Option(help="1h, 1d, 7d, 30d, 90d, 1y, never, or e.g. 12h.")] = "30d",
    note: Annotated[str, typer.Option(help="What the token is for.")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Create a token; its secret is printed once."""
    created = ApiClient.from_config().post("/v1/tokens", {"name": name, "note": note, "expiration": expires_in})
    if as_json:
        print_json(created)
        return
    err.print(f"Created token {created['token']['id']} ({created['token']['name']}). "
              "Copy the secret now; it is not shown again:")
    print(created["secret"])


@token_app.command("list")
@friendly
def token_list(
    all_org: Annotated[bool, typer.Option("--all", help="Admins: the whole organization.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List your tokens."""
    items = ApiClient.from_config().get_all("/v1/tokens", all="true" if all_org else None)
    if as_json:
        print_json(items)
    elif not items:
        out.print("No tokens yet. Create one with: tokensmith token create --name NAME")
    else:
        out.print(tokens_table(items))


@token_app.command("delete")
@friendly
def token_delete(token_id: Annotated[str, typer.Argument(help="The token id, e.g. tok_...")]) -> None:
    """Delete (revoke) a token; its secret stops working at once."""
    ApiClient.from_config().delete(f"/v1/tokens/{token_id}")
    out.print(f"deleted {token_id}")


def _admin_services() -> Any:
    from tokensmith.bootstrap import prepare
    from tokensmith.config import Settings

    return prepare(Settings.from_env())


@contextmanager
def _operator_unit() -> Iterator[UnitOfWork]:
    """A unit of work on the server's own database, for the operator at this terminal (audited as such)."""
    from tokensmith.clock import SystemClock
    from tokensmith.config import Settings
    from tokensmith.objectstore.crypto import LazyKeyRing
    from tokensmith.usecases.base import UnitsOfWork

    settings = Settings.from_env()
    boot = _admin_services()
    units = UnitsOfWork(database=boot.database, clock=SystemClock(), secret_key=boot.secret_key,
                        keyring=LazyKeyRing(settings), settings=settings)
    with units() as uow:
        yield uow


@admin_app.command("create-user")
@friendly
def admin_create_user(
    username: Annotated[str, typer.Argument()],
    admin: Annotated[bool, typer.Option("--admin", help="Make the user an organization admin.")] = False,
    org: Annotated[str, typer.Option(help="Organization (created if missing).")] = "default",
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from stdin.")] = False,
) -> None:
    """Create a user; prints a generated password unless --password-stdin is given."""
    from tokensmith.accounts.passwords import generate_password
    from tokensmith.usecases import users

    password = sys.stdin.readline().rstrip("\n") if password_stdin else generate_password()
    with _operator_unit() as uow:
        organization = uow.accounts.get_or_create_org(org)
        user = users.create_user(uow, Actor.operator(organization.id), username, password, is_admin=admin)
        err.print(f"created user {user.username} ({user.public_id}) in {org}")
    if not password_stdin:
        print(password)


@admin_app.command("create-token")
@friendly
def admin_create_token(
    user: Annotated[str, typer.Option(help="The user who will own the token.")],
    name: Annotated[str, typer.Option(help="Token name.")],
    expires_in: Annotated[str, typer.Option(help="1h, 1d, 7d, 30d, 90d, 1y, never, or e.g. 12h.")] = "30d",
    note: Annotated[str, typer.Option(help="What the token is for.")] = "",
    verify_s3: Annotated[bool, typer.Option("--verify-s3", help="Also grant object-storage:verify (S3 gateways).")]
    = False,
    introspect: Annotated[bool, typer.Option(
        "--introspect", help="Also grant the 'introspect' scope (RFC 7662, for API gateways).")] = False,
) -> None:
    """Create a token for a user; prints the secret alone on stdout."""
    from tokensmith.scopes import default_scopes
    from tokensmith.usecases import tokens
    from tokensmith.usecases.tokens import TokenRequest

    with _operator_unit() as uow:
        owner = uow.accounts.find_user(user)
        if owner is None:
            raise CliError(f"user {user!r} not found")
        wanted = (("object-storage:verify", verify_s3), ("introspect", introspect))
        service_scopes = {scope for scope, asked in wanted if asked}
        scopes = sorted(default_scopes(owner.is_admin) | service_scopes) if service_scopes else None
        issued = tokens.issue_token_for(
            uow, Actor.operator(owner.org_id), owner.public_id,
            TokenRequest(name=name, note=note, expiration=expires_in, scopes=scopes),
            grant_service_scopes=bool(service_scopes),
        )
    print(issued.secret)


app.add_typer(access_keys.register(friendly, admin_app), name="access-key")
app.add_typer(clusters.register(friendly), name="cluster")
_service_accounts, _trust_policies = federation.register(friendly)
app.add_typer(_service_accounts, name="service-account")
app.add_typer(_trust_policies, name="trust-policy")
@admin_app.command("backup")
@friendly
def admin_backup(
    file: Annotated[str, typer.Argument(help="Where to write the copy.")],
    force: Annotated[bool, typer.Option("--force", help="Overwrite FILE if it exists.")] = False,
) -> None:
    """Copy the SQLite database to FILE while the server runs (SQLite online backup)."""
    from pathlib import Path

    from tokensmith.backup import backup
    from tokensmith.config import Settings

    backup(Settings.from_env(), Path(file), force=force)
    err.print(f"backed up to {file}")


@admin_app.command("restore")
@friendly
def admin_restore(
    file: Annotated[str, typer.Argument(help="A backup written by tokensmith admin backup.")],
    force: Annotated[bool, typer.Option("--force", help="Replace a database that holds data.")] = False,
) -> None:
    """Replace the SQLite database with FILE (stop the server first); refuses to clobber data without --force."""
    from pathlib import Path

    from tokensmith.backup import restore
    from tokensmith.config import Settings

    restore(Settings.from_env(), Path(file), force=force)
    err.print(f"restored from {file}")
# Lifecycle commands (rotate, scan, create-reporter, audit export) register themselves on the apps above.
from tokensmith.cli import lifecycle as _lifecycle  # noqa: E402, F401


def main() -> None:
    app()
