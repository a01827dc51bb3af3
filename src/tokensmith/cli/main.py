"""``tokensmith``: run the server, manage tokens, and administer the database directly.

Exit codes: 0 success, 1 the request failed (or `scan` found secrets, `kubeconfig check` found problems),
2 bad usage, 3 not logged in or not authorized, 4 `serve`: the port is already in use.
"""

# No `from __future__ import annotations` in a module that declares commands: see tokensmith/cli/__init__.py.

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tokensmith import durations
from tokensmith.cli import access_keys, clusters, datadir, federation, helpfmt, org  # noqa: F401 (helpfmt: flags without <bool>)
from tokensmith.cli.client import ApiClient, CliError, check_server
from tokensmith.cli.config import ClientConfig
from tokensmith.cli.friendly import friendly
from tokensmith.cli.kube import cluster_app, kubeconfig_app
from tokensmith.cli.output import err, expiry_text, out, print_json, tokens_table, when
from tokensmith.errors import InvalidInput
from tokensmith.kube import kubeconfig
from tokensmith.tokens import expiration

if TYPE_CHECKING:
    from tokensmith.usecases import UnitOfWork

app = typer.Typer(help="Self-hosted API access tokens. Shell completion: tokensmith --install-completion.",
                  no_args_is_help=True, add_completion=True)
token_app = typer.Typer(help="Create, list and delete your tokens.", no_args_is_help=True)
admin_app = typer.Typer(help="Act on the database directly (bootstrapping and scripts).", no_args_is_help=True)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
app.add_typer(token_app, name="token")
app.add_typer(admin_app, name="admin")
app.add_typer(db_app, name="db")
app.add_typer(kubeconfig_app, name="kubeconfig")
admin_app.add_typer(cluster_app, name="cluster")



PORT_IN_USE = 4


def _port_in_use(host: str, port: int) -> bool:
    """Whether ``host:port`` cannot be bound, checked before the server starts any background work."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is not "busy"
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


@app.command()
@friendly
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0 for every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 1,
    tls_cert: Annotated[Path | None, typer.Option(
        help="Serve HTTPS with this PEM certificate (chain); also TOKENSMITH_TLS_CERT.")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="The certificate's PEM private key; also TOKENSMITH_TLS_KEY.")]
    = None,
) -> None:
    """Run the server (SQLite in ./.tokensmith unless TOKENSMITH_DATABASE_URL is set). Exit 4: port in use."""
    if _port_in_use(host, port):
        raise CliError(f"{host}:{port} is already in use (another tokensmith?); stop it or pick another --port",
                       PORT_IN_USE)
    from tokensmith.server import run

    run(host=host, port=port, workers=workers, tls_cert=tls_cert, tls_key=tls_key)


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
    url: Annotated[str | None, typer.Option(
        help="The tokensmith server, e.g. http://127.0.0.1:8000. Default: $TOKENSMITH_URL, else the last one used.",
    )] = None,
    username: Annotated[str | None, typer.Option(help="Asked for when not given.")] = None,
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from stdin.")]
    = False,
    expires_in: Annotated[str, typer.Option(help="Lifetime of the CLI's token, e.g. 8h, 30d.")] = "30d",
    web: Annotated[bool, typer.Option("--web", help="Approve in the browser (console) instead of a password.")]
    = False,
) -> None:
    """Sign in with a password (or --web: approve a code in the console); the token is kept 0600.

    Logging in again replaces the CLI's previous token instead of adding another one.
    """
    import socket

    previous = ClientConfig.load()
    target = url or previous.url
    if not target:
        raise CliError("which server? pass --url URL or set TOKENSMITH_URL (e.g. http://127.0.0.1:8000)", 2)
    parse_expiration(expires_in)
    root = check_server(target)  # before any prompt: a wrong URL should not cost a typed password
    if web:  # RFC 8628: no password typed here; a signed-in person approves the code in the console
        from tokensmith.cli.device_login import login_with_browser

        login_with_browser(root)
        return
    if username is None:
        username = typer.prompt("Username")
    if password_stdin or not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = typer.prompt("Password", hide_input=True)
    interactive = not password_stdin and sys.stdin.isatty()
    request = {"username": username, "password": password, "name": f"cli@{socket.gethostname()}"[:100],
               "expiration": expires_in}
    try:
        created = ApiClient(root).post("/v1/auth/token", request)
    except CliError as refused:
        if "must be changed" not in str(refused):
            raise
        # A first (initial or reset) password mints no token: choose your own now, as `passwd` would.
        request["password"] = _choose_password(root, username, password, interactive)
        created = ApiClient(root).post("/v1/auth/token", request)
    new_id = created["token"]["id"]
    replaced = ""
    if previous.token_id and previous.token and previous.stored_url == root and previous.token_id != new_id:
        # The old login's token is revoked once the new one exists, so logins do not pile up cli@host
        # tokens. It deletes itself (it may be another user's); failing that, the new login tries.
        for secret in (previous.token, created["secret"]):
            try:
                ApiClient(root, secret).delete(f"/v1/tokens/{previous.token_id}")
            except CliError:
                continue  # expired, already gone, or not this user's to delete: nothing left to clean up
            replaced = f"; replaced {previous.token_id}"
            break
    path = ClientConfig(url=root, token=created["secret"], token_id=new_id).save()
    out.print(f"logged in as {username} at {root}; token {new_id} stored in {path}{replaced}")
    err.print(f"the token expires {expiry_text(created['token']['expires_at'])}")


def _choose_password(root: str, username: str, first: str, interactive: bool) -> str:
    """Replace a first password (POST /v1/auth/password); the new one is asked twice on a terminal,
    else read as the next line of standard input."""
    err.print("This password was given to you to be changed: choose your own (at least 8 characters).")
    if interactive:
        new = typer.prompt("New password", hide_input=True, confirmation_prompt=True)
    else:
        new = sys.stdin.readline().rstrip("\n")
        if not new:
            raise CliError("this password must be changed first: send the new one as the next line of stdin, "
                           "or run tokensmith login on a terminal", 3)
    ApiClient(root).post("/v1/auth/password", {"username": username, "password": first, "new_password": new})
    err.print("password changed")
    return new


@app.command("kube-credential")
@friendly
def kube_credential(cluster: Annotated[str, typer.Option(help="The cluster's name or id.")]) -> None:
    """kubectl's exec plugin: an ExecCredential for CLUSTER (1 hour at most, cached 0600, tied to your login)."""
    from tokensmith.cli.exec_credential import run_kube_credential

    run_kube_credential(cluster)


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


def parse_expiration(text: str) -> str:
    """The --expires-in text, checked locally with the server's own grammar (exit 2 on a typo)."""
    try:
        expiration.parse_duration(text)
    except InvalidInput as exc:
        raise CliError(f"--expires-in: {exc.detail}", 2) from None
    return text.strip()


def expiry_body(expires_in: str | None, expires_at: str | None) -> dict[str, str]:
    """The API's ``expiration`` or ``expires_at`` from --expires-in / --expires-at (one of them, or none)."""
    if expires_in is not None and expires_at is not None:
        raise CliError("give either --expires-in or --expires-at, not both", 2)
    if expires_in is not None:
        return {"expiration": parse_expiration(expires_in)}
    if expires_at is not None:
        try:
            return {"expires_at": durations.parse_instant(expires_at, "--expires-at").isoformat()}
        except InvalidInput as exc:
            raise CliError(exc.detail, 2) from None
    return {}


JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]
ExpiresIn = Annotated[str | None, typer.Option(
    "--expires-in", help="A lifetime: 1h, 8h, 30d, 90d, 1y, never (m is minutes; no months).")]
ExpiresAt = Annotated[str | None, typer.Option(
    "--expires-at", help="An expiry date: YYYY-MM-DD (00:00 UTC) or RFC 3339, e.g. 2027-01-31.")]
TokenRef = Annotated[str, typer.Argument(help="The token's id (tok_...) or its name, if unique.")]


@token_app.command("create")
@friendly
def token_create(
    name: Annotated[str, typer.Option(help="A name to recognise the token by.")],
    note: Annotated[str, typer.Option(help="What the token is for.")] = "",
    expires_in: ExpiresIn = None,
    expires_at: ExpiresAt = None,
    cluster: Annotated[list[str] | None, typer.Option(
        "--cluster", help="Grant a cluster (name or id); repeat for more. NAME=LEVEL picks an access level.")]
    = None,
    scope: Annotated[list[str] | None, typer.Option(
        "--scope", help="Limit the token to a scope; repeat for more. Default: all of yours.")] = None,
    with_kubeconfig: Annotated[bool, typer.Option(
        "--kubeconfig", help="Also make a kubeconfig for the granted clusters (the secret goes into it).")]
    = False,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="With --kubeconfig: write it to FILE (0600). Default: a new file here.")] = None,
    merge: Annotated[bool, typer.Option(
        "--merge", help="With --kubeconfig: merge it into $KUBECONFIG's first file or ~/.kube/config.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Create a token; its secret is printed once, alone on stdout (or written into the kubeconfig)."""
    if (output is not None or merge) and not with_kubeconfig:
        raise CliError("-o/--merge go with --kubeconfig", 2)
    if output is not None and merge:
        raise CliError("give either -o FILE or --merge, not both", 2)
    if with_kubeconfig and not cluster:
        raise CliError("--kubeconfig needs at least one --cluster", 2)
    body: dict[str, Any] = {"name": name, "note": note, **expiry_body(expires_in, expires_at)}
    if cluster:
        body["clusters"] = cluster
    if scope:
        body["scopes"] = scope
    if with_kubeconfig:
        body["kubeconfig"] = True
    created = ApiClient.from_config().post("/v1/tokens", body)
    if as_json:
        print_json(created)
        return
    token = created["token"]
    granted = ", ".join(c["name"] for c in token["clusters"])
    err.print(f"Created token {token['id']} ({token['name']})" + (f" for {granted}" if granted else "") + ".")
    err.print(f"It expires {expiry_text(token['expires_at'])}.")
    if not with_kubeconfig:
        err.print("Copy the secret now; it is not shown again:")
        print(created["secret"])
        return
    if merge:
        target = kubeconfig.default_path()
        backup = kubeconfig.merge_into_file(target, kubeconfig.parse(created["kubeconfig"], "the new kubeconfig"))
        saved = f" (backup: {backup})" if backup else ""
        err.print(f"Merged the kubeconfig into {target}{saved}; the secret is only there.")
        return
    target = output if output is not None else Path(created["kubeconfig_filename"])
    kubeconfig.write_atomic(target, created["kubeconfig"], backup=target.exists())
    err.print(f"Wrote {target} (mode 0600); the secret is only there. Try: kubectl --kubeconfig {target} "
              "get --raw /version")


def own_token_id(client: ApiClient) -> str | None:
    """The id of the token this CLI signs in with (stored at login, else asked of the server)."""
    stored = ClientConfig.load().token_id
    if stored:
        return stored
    me: dict[str, Any] = client.get("/v1/whoami")
    return str(me["token"]["id"])


def resolve_token(client: ApiClient, ref: str) -> dict[str, Any]:
    """A token of yours by id or by unique name; CliError listing the ids when a name is ambiguous."""
    ref = ref.strip()
    if ref.startswith("tok_"):
        try:
            found: dict[str, Any] = client.get(f"/v1/tokens/{ref}")
            return found
        except CliError as exc:
            if not str(exc).startswith("404"):
                raise
    matches = [t for t in client.get_all("/v1/tokens") if t["name"] == ref]
    if not matches:
        raise CliError(f"token {ref!r} not found (no id or name matches); see: tokensmith token list")
    if len(matches) > 1:
        ids = ", ".join(f"{t['id']} (created {when(t['created_at'])})" for t in matches)
        raise CliError(f"{len(matches)} tokens are named {ref!r}: {ids}; give the id", 2)
    return matches[0]


@token_app.command("list")
@friendly
def token_list(
    all_org: Annotated[bool, typer.Option("--all", help="Admins: the whole organization.")] = False,
    wide: Annotated[bool, typer.Option("--wide", help="More columns (hint, created), without wrapping.")]
    = False,
    as_json: JsonFlag = False,
) -> None:
    """List your tokens: full ids, name, note, expiry, last use, clusters; * marks the CLI's own token."""
    client = ApiClient.from_config()
    items = client.get_all("/v1/tokens", all="true" if all_org else None)
    if as_json:
        print_json(items)
    elif not items:
        out.print("No tokens yet. Create one with: tokensmith token create --name NAME")
    else:
        table = tokens_table(items, own_token_id(client), wide=wide, owners=all_org)
        if wide:
            from rich.console import Console

            Console(highlight=False, width=max(out.width, 250)).print(table)
        else:
            out.print(table)


@token_app.command("show")
@friendly
def token_show(token: TokenRef, as_json: JsonFlag = False) -> None:
    """Show one token (never its secret)."""
    found = resolve_token(ApiClient.from_config(), token)
    if as_json:
        print_json(found)
        return
    expires = ("expired " + when(found["expires_at"])) if found["expired"] else expiry_text(found["expires_at"])
    rows = [("ID", found["id"]), ("Name", found["name"]), ("Note", found["note"] or "-"),
            ("Owner", found["owner"]["username"]), ("Hint", f"…{found['hint']}"),
            ("Created", when(found["created_at"])), ("Expires", expires), ("Last used", when(found["last_used_at"])),
            ("Clusters", ", ".join(c["name"] for c in found["clusters"]) or "-"),
            ("Scopes", " ".join(found["scopes"]))]
    for label, value in rows:
        out.print(f"{label + ':':<11}{value}")


@token_app.command("delete")
@friendly
def token_delete(token: TokenRef) -> None:
    """Delete (revoke) a token; its secret stops working at once."""
    client = ApiClient.from_config()
    found = resolve_token(client, token)
    client.delete(f"/v1/tokens/{found['id']}")
    out.print(f"deleted {found['id']} ({found['name']})")


@token_app.command("extend")
@friendly
def token_extend(token: TokenRef, expires_in: ExpiresIn = None, expires_at: ExpiresAt = None,
                 as_json: JsonFlag = False) -> None:
    """Give a live token a new expiry within the organization's policy (the secret stays the same)."""
    body = expiry_body(expires_in, expires_at)
    if not body:
        raise CliError("give the new expiry: --expires-in 30d or --expires-at 2027-01-31", 2)
    client = ApiClient.from_config()  # PATCH /v1/tokens/{id} takes expiration (30d, never) or expires_at
    found = resolve_token(client, token)
    try:
        changed = client.patch(f"/v1/tokens/{found['id']}", body)
    except CliError as exc:
        if str(exc).startswith("405"):  # a server from before PATCH /v1/tokens/{id}
            raise CliError(f"{client.url} cannot extend tokens (it is older); rotate instead: "
                           f"tokensmith token rotate {found['id']} --expires-in ...") from None
        raise
    if as_json:
        print_json(changed)
        return
    out.print(f"{changed['id']} now expires {expiry_text(changed['expires_at'])}")


def _admin_services() -> Any:
    return datadir.admin_services()


@admin_app.callback()
def admin_options(
    init: Annotated[bool, typer.Option(
        "--init", help="Create the data directory and database if there is none (otherwise: refuse).")] = False,
) -> None:
    """Act on the database directly, for bootstrap and recovery; everyday admin work: tokensmith user|cluster|vpc."""
    datadir.allow_init = init


@contextmanager
def _operator_unit() -> Iterator["UnitOfWork"]:
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
    from tokensmith.usecases import Actor, users

    password = sys.stdin.readline().rstrip("\n") if password_stdin else generate_password()
    with _operator_unit() as uow:
        organization = uow.accounts.get_or_create_org(org)
        user = users.create_user(uow, Actor.operator(organization.id), username, password, is_admin=admin)
        err.print(f"created user {user.username} ({user.public_id}) in {org} ({datadir.where()})")
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
    from tokensmith.usecases import Actor, tokens
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
        err.print(f"created token {issued.token.public_id} for {owner.username} ({datadir.where()})")
    print(issued.secret)


app.add_typer(access_keys.register(friendly, admin_app), name="access-key")
app.add_typer(clusters.register(friendly), name="cluster")
org.register(friendly, app)
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

    settings = Settings.from_env()  # reads only: a missing database is reported by backup() itself
    with datadir.copy_progress("backing up") as advance:
        backup(settings, Path(file), force=force, on_progress=advance)
    err.print(f"backed up {settings.database_url.removeprefix('sqlite:///')} to {file}")


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

    settings = Settings.from_env()
    with datadir.copy_progress("restoring") as advance:
        restore(settings, Path(file), force=force, on_progress=advance)
    err.print(f"restored {file} into {settings.data_dir}")
# Lifecycle commands (rotate, scan, create-reporter, audit export) register themselves on the apps above.
from tokensmith.cli import lifecycle as _lifecycle  # noqa: E402, F401


def main() -> None:
    # This process is the tokensmith command, never httpx's own: without httpx's command line (httpx._main,
    # which its package imports when it can), importing httpx skips click, rich's syntax highlighting and
    # pygments, ~0.1 s of CPU in every command that talks to the server. httpx then defines a stub main().
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    # The same name (in usage lines and shell completion) whether run as `tokensmith` or `python -m tokensmith`.
    app(prog_name="tokensmith")
