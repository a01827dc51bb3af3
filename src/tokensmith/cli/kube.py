"""``tokensmith kubeconfig`` (build, merge, check) and ``tokensmith admin cluster webhook-config``.

Kubeconfigs are built here, client-side, from the secret the user holds and ``GET /v1/clusters``:
the server never sees a secret again after creating it.
"""

# No `from __future__ import annotations` in a module that declares commands: see tokensmith/cli/__init__.py.

import getpass
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from typer import _click  # typer vendors click: TyperGroup.parse_args takes its Context
from typer.core import TyperGroup

from tokensmith import secrets
from tokensmith.cli import exec_credential
from tokensmith.cli.client import NOT_LOGGED_IN, ApiClient, CliError, tls_for
from tokensmith.cli.config import ClientConfig
from tokensmith.cli.friendly import friendly
from tokensmith.cli.output import err, out, print_json
from tokensmith.kube import kubeconfig
from tokensmith.kube.kubeconfig import TokenState


class _OptionalMergeValue(TyperGroup):
    """Lets ``--merge`` stand alone (default file) or take a FILE, as ``--merge [FILE]``."""

    def parse_args(self, ctx: _click.Context, args: list[str]) -> list[str]:
        fixed = [
            "--merge=" if arg == "--merge" and (i + 1 == len(args) or args[i + 1].startswith("-")) else arg
            for i, arg in enumerate(args)
        ]
        return super().parse_args(ctx, fixed)


kubeconfig_app = typer.Typer(
    cls=_OptionalMergeValue, invoke_without_command=True,
    help="Build a kubeconfig from a token secret you hold, merge it into ~/.kube/config, or check one.",
)
cluster_app = typer.Typer(help="Clusters: webhook set-up for their API servers.", no_args_is_help=True)


def _read_secret(token_file: Path | None) -> str:
    if token_file is not None:
        secret = token_file.read_text().strip()
    elif sys.stdin.isatty():
        secret = getpass.getpass("token secret: ").strip()
    else:
        secret = sys.stdin.readline().strip()
    if not secrets.is_well_formed(secret):
        raise CliError("that is not a tokensmith token secret (tsm_...); pass --token-file FILE or pipe it on stdin", 2)
    return secret


def _server_url() -> ClientConfig:
    config = ClientConfig.load()
    if not config.url:
        raise CliError("no tokensmith server: run 'tokensmith login --url URL' or set TOKENSMITH_URL", NOT_LOGGED_IN)
    return config


def _all_clusters(client: ApiClient) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = client.get("/v1/clusters", cursor=cursor, limit=200)
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            return items


def _pick(available: list[dict[str, Any]], wanted: list[str]) -> list[dict[str, Any]]:
    chosen: list[dict[str, Any]] = []
    for ref in wanted:
        match = next((c for c in available if ref in (c["id"], c["name"])), None)
        if match is None:
            names = ", ".join(sorted(c["name"] for c in available)) or "none"
            raise CliError(f"cluster {ref!r} not found; your organization's clusters: {names}")
        if match not in chosen:
            chosen.append(match)
    return chosen


@kubeconfig_app.callback()
@friendly
def kubeconfig_build(
    ctx: typer.Context,
    cluster: Annotated[list[str] | None, typer.Option("--cluster", help="A cluster name or id; repeat for more.")]
    = None,
    token_file: Annotated[Path | None, typer.Option(help="Read the secret from this file (default: stdin).")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to FILE (0600, atomic).")] = None,
    merge: Annotated[str | None, typer.Option(
        "--merge", metavar="[FILE]",
        help="Merge into FILE (default: $KUBECONFIG's first file or ~/.kube/config); the file is backed up "
             "first and the backup removed once the merge is verified.",
    )] = None,
    keep_backup: Annotated[bool, typer.Option(
        "--backup", help="With --merge: keep the backup (mode 0600) of the file as it was.")] = False,
    exec_plugin: Annotated[bool, typer.Option(
        "--exec", help="No secret in the file: kubectl runs 'tokensmith kube-credential' (needs 'tokensmith login').",
    )] = False,
) -> None:
    """Build a kubeconfig for the secret you hold and the clusters you name; prints it unless -o/--merge."""
    if ctx.invoked_subcommand is not None:
        return
    if not cluster:
        raise CliError("name at least one cluster: tokensmith kubeconfig --cluster NAME [--cluster NAME ...]", 2)
    if output is not None and merge is not None:
        raise CliError("give either -o FILE or --merge [FILE], not both", 2)
    if exec_plugin:
        return exec_credential.write_exec_kubeconfig(cluster, output, merge)
    config = _server_url()
    secret = _read_secret(token_file)
    try:
        me = ApiClient(config.url or "", secret).get("/v1/whoami")
    except CliError as exc:
        if exc.exit_code != NOT_LOGGED_IN:
            raise
        raise CliError(f"tokensmith refused that secret ({exc}); it is deleted, expired or unknown",
                       NOT_LOGGED_IN) from None
    # Listing clusters needs clusters:read; a kubernetes-only token may lack it, the CLI login has it.
    chosen = _pick(_all_clusters(ApiClient(config.url or "", config.token or secret)), cluster)
    granted = {c["id"] for c in me["token"]["clusters"]}
    for c in chosen:
        if c["id"] not in granted:
            err.print(f"warning: token {me['token']['id']} does not grant cluster {c['name']}; "
                      "its API server will refuse it")
    org = me["organization"]["name"]
    entries = [kubeconfig.ClusterEntry(org, c["name"], c["server"], c["certificate_authority"]) for c in chosen]
    document = kubeconfig.build(entries, secret, org, me["token"]["id"])
    if merge is not None:
        path = Path(merge).expanduser() if merge else kubeconfig.default_path()
        backup = kubeconfig.merge_into_file(path, document, keep_backup=keep_backup)
        saved = f" (backup: {backup})" if backup else ""
        err.print(f"merged {len(chosen)} cluster(s) into {path}{saved}; current context unchanged unless it was unset")
    elif output is not None:
        kubeconfig.write_atomic(output, kubeconfig.render(document), backup=output.exists())
        err.print(f"wrote {output} (mode 0600); use it with: kubectl --kubeconfig {output} get --raw /version")
    else:
        sys.stdout.write(kubeconfig.render(document))


def _token_state(url: str | None) -> Callable[[str], TokenState]:
    import httpx

    def state(secret: str) -> TokenState:
        if not url:
            return TokenState("unchecked")
        try:
            response = httpx.get(f"{url.rstrip('/')}/v1/whoami", headers={"Authorization": f"Bearer {secret}"},
                                 timeout=15.0, verify=tls_for(url))
        except httpx.HTTPError:
            return TokenState("unchecked")
        if response.status_code == 200:
            me = response.json()
            token = me["token"]
            expires = datetime.fromisoformat(token["expires_at"]) if token["expires_at"] else None
            return TokenState("live", expires, token["id"], _grants(url, secret, me))
        if response.status_code == 401:
            expired = response.json().get("detail") == "token expired"
            return TokenState("expired" if expired else "invalid")
        return TokenState("unchecked")

    return state


def _grants(url: str, secret: str, me: dict[str, Any]) -> frozenset[str]:
    """How the clusters a token grants can appear in a kubeconfig: entry names, names, ids, servers."""
    import httpx

    org = me["organization"]["name"]
    grants: set[str] = set()
    for granted in me["token"]["clusters"]:
        grants |= {kubeconfig.cluster_name(org, granted["name"]), granted["name"], granted["id"]}
        try:  # the server URL too, for hand-named entries; needs clusters:read, which the token may lack
            answer = httpx.get(f"{url.rstrip('/')}/v1/clusters/{granted['id']}",
                               headers={"Authorization": f"Bearer {secret}"}, timeout=15.0, verify=tls_for(url))
        except httpx.HTTPError:
            continue
        if answer.status_code == 200:
            grants.add(answer.json()["server"])
    return frozenset(grants)


@kubeconfig_app.command("check")
@friendly
def kubeconfig_check(
    files: Annotated[list[Path] | None, typer.Argument(
        help="Default: every file in $KUBECONFIG (as kubectl merges them), else ~/.kube/config.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON: files, problems, unchecked tokens.")] = False,
) -> None:
    """Report kubeconfig problems: loose permissions, inside a git tree, tokens expired, revoked, expiring, or not
    granting their context's cluster. Exit 1 when there are problems."""
    explicit = bool(files)
    paths = files or kubeconfig.search_paths()
    missing = [path for path in paths if not path.exists()]
    if explicit and missing:
        raise CliError(f"{missing[0]} does not exist")
    present = [path for path in paths if path.exists()]
    if not present:  # kubectl itself skips $KUBECONFIG entries that do not exist
        raise CliError(f"{' and '.join(map(str, paths))} {'does' if len(paths) == 1 else 'do'} not exist")
    url = ClientConfig.load().url
    ask = _token_state(url)
    unchecked: list[str] = []

    def state(secret: str) -> TokenState:
        answer = ask(secret)
        if answer.state == "unchecked":
            unchecked.append(secret)
        return answer

    problems = [problem for path in present for problem in kubeconfig.check(path, state, datetime.now(UTC))]
    if not url:
        err.print("note: tokensmith tokens were not checked: run 'tokensmith login' or set TOKENSMITH_URL")
    elif unchecked:
        err.print(f"note: could not check {len(unchecked)} tokensmith token(s): {url} did not answer; "
                  "whether they are live and grant their clusters is unknown")
    if as_json:
        print_json({"files": [str(p) for p in present], "problems": problems, "checked": bool(url),
                    "unchecked_tokens": len(unchecked)})
    for problem in [] if as_json else problems:
        out.print(f"problem: {problem}")
    if problems:
        raise typer.Exit(1)
    if as_json:
        return
    checked = "" if url and not unchecked else " (tokens not checked)"
    out.print(f"{', '.join(map(str, present))}: no problems found{checked}")


def _find_cluster(session: Any, cluster: str, org: str | None) -> Any:
    """The one cluster named ``cluster`` (id or name), in ``org`` when given; CliError otherwise."""
    from sqlalchemy import select

    from tokensmith.db.models import Cluster, Organization

    query = select(Cluster).join(Organization, Organization.id == Cluster.org_id).where(
        (Cluster.public_id == cluster) | (Cluster.name == cluster))
    if org is not None:
        query = query.where(Organization.name == org)
    found = list(session.scalars(query))
    if not found:
        raise CliError(f"cluster {cluster!r} not found")
    if len(found) > 1:
        raise CliError(f"several organizations have a cluster named {cluster!r}; pass --org", 2)
    return found[0]


@cluster_app.command("webhook-config")
@friendly
def webhook_config(
    cluster: Annotated[str, typer.Argument(help="The cluster's name or id.")],
    url: Annotated[str, typer.Option(help="tokensmith's https URL as the cluster's API server reaches it.")],
    org: Annotated[str | None, typer.Option(help="The cluster's organization (if its name is not unique).")] = None,
    certificate_authority: Annotated[Path | None, typer.Option(
        help="PEM CA file of tokensmith's TLS certificate, embedded in the webhook kubeconfig "
             "(default: the last certificate of TOKENSMITH_TLS_CERT's chain, if it has one).")] = None,
    config_path: Annotated[str | None, typer.Option(help="Where the file will live on the API server's host.")]
    = None,
    authz: Annotated[bool, typer.Option(
        "--authz", help="Print the authorization (SubjectAccessReview) webhook's kubeconfig and flags instead.")]
    = False,
) -> None:
    """Mint a webhook credential for CLUSTER; print, once, the API server's webhook kubeconfig and flags."""
    from tokensmith.bootstrap import prepare
    from tokensmith.cli.datadir import admin_settings
    from tokensmith.clock import SystemClock
    from tokensmith.errors import InvalidInput
    from tokensmith.kube import levels, tls, webhooks

    try:
        url = tls.require_https(url, "url")
    except InvalidInput as refused:
        raise CliError(f"--url {url}: {refused.detail}", 2) from None
    settings = admin_settings()
    if certificate_authority is not None:
        ca: str | None = certificate_authority.read_text()
        tls.certificates(ca or "")  # a file that is not PEM fails here, clearly
    else:
        ca = tls.ca_from_chain(settings.tls_cert.read_text()) if settings.tls_cert else None
    path = config_path or (webhooks.AUTHZ_CONFIG_PATH if authz else webhooks.AUTHN_CONFIG_PATH)
    boot = prepare(settings)
    with boot.database.session() as session:
        target = _find_cluster(session, cluster, org)
        minted = webhooks.WebhookCredentialService(session, SystemClock(), boot.secret_key).mint(target)
        endpoint = (webhooks.subjectaccessreview_url if authz else webhooks.tokenreview_url)(url, target)
        document = webhooks.webhook_kubeconfig(endpoint, minted.secret, ca)
        flags = (webhooks.authorizer_flags(path) if authz
                 else webhooks.apiserver_flags(path, target.token_audience))
        what = "authorization (SubjectAccessReview)" if authz else "authentication (TokenReview)"
        header = [
            f"# tokensmith {what} webhook kubeconfig for cluster {target.name} ({target.public_id}),",
            f"# credential {minted.credential.public_id}. The credential is shown only now.",
            f"# Save this as {path} (mode 0600) on the API server's host and start kube-apiserver with:",
            *[f"#   {flag}" for flag in flags],
        ]
        if authz:
            header += ["# The webhook never grants: it denies what a token's access level does not allow and has",
                       "# no opinion otherwise (RBAC decides), nor on requests that are not from tokensmith tokens."]
        else:
            header += [
                "# (the cache TTL keeps a deleted token working at most that long; the default is 2 minutes)",
                f"# User names: {target.username_prefix}<tokensmith user name> (username prefix "
                f"{target.username_prefix!r}); groups: tokensmith:org:<org>, tokensmith:admins and the token's "
                f"level: {', '.join(levels.group(level) for level in levels.LEVELS)}",
                f"# Bind the level groups to the built-in roles: tokensmith admin cluster rbac {target.name}",
            ]
        if ca is None:
            header.append("# No CA embedded: the API server must trust tokensmith's certificate through its system "
                          "roots (else pass --certificate-authority FILE).")
    sys.stdout.write("\n".join(header) + "\n" + kubeconfig.render(document))


@cluster_app.command("rbac")
@friendly
def rbac(
    cluster: Annotated[str, typer.Argument(help="The cluster's name or id.")],
    org: Annotated[str | None, typer.Option(help="The cluster's organization (if its name is not unique).")] = None,
) -> None:
    """Print ClusterRoleBindings (YAML) of the tokensmith:<level> groups to the built-in roles (kubectl apply -f -)."""
    from tokensmith.bootstrap import prepare
    from tokensmith.cli.datadir import admin_settings
    from tokensmith.kube import levels

    boot = prepare(admin_settings())
    with boot.database.session() as session:
        target = _find_cluster(session, cluster, org)
        name = target.name
    sys.stdout.write(f"# tokensmith access levels for cluster {name}: kubectl apply -f this file\n"
                     + levels.cluster_role_bindings(name))
