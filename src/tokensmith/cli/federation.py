"""``tokensmith service-account ...`` and ``tokensmith trust-policy ...``, over the REST API (admins)."""

# No `from __future__ import annotations` in a module that declares commands: see tokensmith/cli/__init__.py.

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from tokensmith.cli.client import ApiClient, CliError
from tokensmith.cli.output import err, new_table, out, print_json, when

service_account_app = typer.Typer(help="Service accounts: non-human principals that own tokens (admins).",
                                  no_args_is_help=True)
trust_policy_app = typer.Typer(help="Trust policies: exchange external OIDC tokens for a service account's "
                                    "short-lived token (admins).", no_args_is_help=True)
ACCOUNTS = "/v1/service-accounts"
POLICIES = "/v1/trust-policies"
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]
AccountArg = Annotated[str, typer.Argument(help="The service account's name or id (svc_...).")]


def create_account(
    name: Annotated[str, typer.Argument(help="Letters, digits, '-._'.")],
    admin: Annotated[bool, typer.Option("--admin", help="Make it an organization admin (never by default).")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Create a service account."""
    account = ApiClient.from_config().post(ACCOUNTS, {"name": name, "admin": admin})
    if as_json:
        print_json(account)
    else:
        out.print(f"created service account {account['name']} ({account['id']})")


def list_accounts(as_json: JsonFlag = False) -> None:
    """List the organization's service accounts."""
    items: list[dict[str, Any]] = ApiClient.from_config().get(ACCOUNTS)
    if as_json:
        print_json(items)
        return
    table = new_table(title="Service accounts")
    for column in ("Name", "ID", "Admin", "Disabled", "Created"):
        table.add_column(column)
    for a in items:
        table.add_row(a["name"], a["id"], "yes" if a["admin"] else "", "yes" if a["disabled"] else "",
                      when(a["created_at"]))
    out.print(table)


def _set_disabled(account: str, disabled: bool) -> None:
    changed = ApiClient.from_config().request("PATCH", f"{ACCOUNTS}/{account}", json={"disabled": disabled})
    out.print(f"{'disabled' if changed['disabled'] else 'enabled'} {changed['name']}")


def disable_account(account: AccountArg) -> None:
    """Disable a service account: its tokens stop working at once."""
    _set_disabled(account, True)


def enable_account(account: AccountArg) -> None:
    """Enable a disabled service account again."""
    _set_disabled(account, False)


def delete_account(account: AccountArg) -> None:
    """Delete a service account with its tokens, S3 keys and trust policies."""
    ApiClient.from_config().delete(f"{ACCOUNTS}/{account}")
    out.print(f"deleted {account}")


def mint_token(
    account: AccountArg,
    name: Annotated[str, typer.Option(help="The token's name.")],
    expires_in: Annotated[str | None, typer.Option(help="e.g. 30d, 12h (default: the organization's).")] = None,
    scope: Annotated[list[str] | None, typer.Option("--scope", help="Limit the token to this scope (repeat).")] = None,
    cluster: Annotated[list[str] | None, typer.Option("--cluster", help="Grant this cluster (repeat).")] = None,
) -> None:
    """Mint a token owned by the service account; the secret is printed once, on stdout."""
    body: dict[str, Any] = {"name": name, "expiration": expires_in, "clusters": cluster or []}
    if scope:
        body["scopes"] = scope
    created = ApiClient.from_config().post(f"{ACCOUNTS}/{account}/tokens", body)
    err.print(f"created token {created['token']['id']} for {created['token']['owner']['username']}; "
              "copy the secret now, it is not shown again:")
    print(created["secret"])


def _kubectl_raw(path: str, context: str | None) -> Any:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise CliError("--from-kubectl needs kubectl on PATH")
    command = [kubectl, "get", "--raw", path] + (["--context", context] if context else [])
    done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)  # noqa: S603
    if done.returncode != 0:
        raise CliError(f"kubectl get --raw {path} failed: {done.stderr.strip()[:300]}")
    return json.loads(done.stdout)


def create_policy(
    name: Annotated[str, typer.Argument(help="The policy's name (also the STS role name).")],
    service_account: Annotated[str, typer.Option("--service-account", help="Whose tokens it issues.")],
    audience: Annotated[str, typer.Option(help="The exact aud the external tokens carry.")],
    issuer: Annotated[str | None, typer.Option(help="The tokens' iss (keys discovered from it).")] = None,
    subject: Annotated[str | None, typer.Option(help="A glob on sub: * within a /-segment, ** across.")] = None,
    condition: Annotated[list[str] | None, typer.Option(
        "--condition", help="POINTER=GLOB on a claim, e.g. /repository=octo-org/* (repeat).")] = None,
    scope: Annotated[list[str] | None, typer.Option("--scope", help="A scope the tokens hold (repeat).")] = None,
    cluster: Annotated[list[str] | None, typer.Option("--cluster", help="A cluster they grant (repeat).")] = None,
    lifetime: Annotated[int, typer.Option(help="Seconds the tokens live: 900 to 43200.")] = 3600,
    max_token_age: Annotated[int, typer.Option(help="Oldest external token accepted, in seconds from iat.")] = 86400,
    jwks_file: Annotated[Path | None, typer.Option(help="The issuer's JWKS as a file (air-gapped issuers).")] = None,
    from_kubectl: Annotated[bool, typer.Option(
        "--from-kubectl", help="Take the issuer and its JWKS from the current kubectl context's cluster "
                               "(kubectl get --raw /.well-known/openid-configuration and /openid/v1/jwks).")] = False,
    context: Annotated[str | None, typer.Option(help="With --from-kubectl: the kubectl context.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Trust an issuer's tokens that match the conditions, as a service account."""
    jwks: dict[str, Any] | None = None
    if from_kubectl:
        discovery = _kubectl_raw("/.well-known/openid-configuration", context)
        issuer = issuer or discovery.get("issuer")
        jwks = _kubectl_raw("/openid/v1/jwks", context)
    elif jwks_file is not None:
        jwks = json.loads(jwks_file.read_text())
    if not issuer:
        raise CliError("give --issuer (or --from-kubectl)", 2)
    conditions: dict[str, str] = {}
    for entry in condition or []:
        pointer, sep, pattern = entry.partition("=")
        if not sep:
            raise CliError(f"--condition must be POINTER=GLOB, e.g. /repository=octo-org/* (got {entry!r})", 2)
        conditions[pointer] = pattern
    body = {"name": name, "service_account": service_account, "issuer": issuer, "audience": audience,
            "subject": subject, "conditions": conditions, "scopes": scope or None, "clusters": cluster or [],
            "lifetime_seconds": lifetime, "max_token_age_seconds": max_token_age, "jwks": jwks}
    policy = ApiClient.from_config().post(POLICIES, body)
    if as_json:
        print_json(policy)
        return
    out.print(f"created trust policy {policy['name']} ({policy['id']}) for {policy['service_account']}")
    out.print(f"AWS_ROLE_ARN={policy['role_arn']}")


def list_policies(as_json: JsonFlag = False) -> None:
    """List the organization's trust policies."""
    items: list[dict[str, Any]] = ApiClient.from_config().get(POLICIES)
    if as_json:
        print_json(items)
        return
    table = new_table(title="Trust policies")
    for column in ("Name", "Service account", "Issuer", "Audience", "Subject", "Scopes"):
        table.add_column(column)
    for p in items:
        table.add_row(p["name"], p["service_account"], p["issuer"] + (" (inline JWKS)" if p["inline_jwks"] else ""),
                      p["audience"], p["subject"] or "", " ".join(p["scopes"]))
    out.print(table)


def delete_policy(policy: Annotated[str, typer.Argument(help="The policy's name or id.")]) -> None:
    """Delete a trust policy: no new exchanges."""
    ApiClient.from_config().delete(f"{POLICIES}/{policy}")
    out.print(f"deleted {policy}")


def register(friendly: Any) -> tuple[typer.Typer, typer.Typer]:
    """Attach the commands, wrapped in the CLI's error handling; returns both groups."""
    accounts: tuple[tuple[str, Callable[..., None]], ...] = (
        ("create", create_account), ("list", list_accounts), ("disable", disable_account),
        ("enable", enable_account), ("delete", delete_account), ("token", mint_token))
    for command, fn in accounts:
        service_account_app.command(command)(friendly(fn))
    policies: tuple[tuple[str, Callable[..., None]], ...] = (
        ("create", create_policy), ("list", list_policies), ("delete", delete_policy))
    for command, fn in policies:
        trust_policy_app.command(command)(friendly(fn))
    return service_account_app, trust_policy_app
