"""``tokensmith access-key create|list|delete`` and ``tokensmith admin reencrypt``."""

# No `from __future__ import annotations` in a module that declares commands: see tokensmith/cli/__init__.py.

from typing import TYPE_CHECKING, Annotated, Any

import typer

from tokensmith import durations
from tokensmith.cli import datadir
from tokensmith.cli.client import ApiClient, CliError
from tokensmith.cli.output import err, new_table, out, print_json, when
from tokensmith.errors import InvalidInput

if TYPE_CHECKING:
    from rich.table import Table

app = typer.Typer(help="Create, list and delete S3 access keys for object storage.", no_args_is_help=True)
PATH = "/v1/object-storage/access-keys"


def parse_duration(text: str) -> int:
    """'permanent' (or 'never', '0') -> 0; otherwise the one duration grammar (15m, 12h, 7d) in seconds.

    The server checks the range; only the meaning is decided here.
    """
    value = text.strip().lower()
    if value in ("permanent", "never", "0"):
        return 0
    try:
        return int(durations.parse_duration(text, "--duration").total_seconds())
    except InvalidInput as exc:
        raise CliError(f"{exc.detail}, or 'permanent'", 2) from None


def keys_table(keys: list[dict[str, Any]]) -> "Table":
    table = new_table(title="Access keys")
    for column in ("Name", "Access key id", "Kind", "Created", "Expires"):
        table.add_column(column)
    for k in keys:
        expires = when(k["expiry"]) + (" (expired)" if k.get("expired") else "")
        table.add_row(k["name"], k["accessKeyId"], "permanent" if k["permanent"] else "temporary",
                      when(k["createdAt"]), expires)
    return table


def create(
    name: Annotated[str, typer.Option(help="A name to recognise the key by.")],
    duration: Annotated[str, typer.Option(help="'permanent', or a lifetime from 15m to 7d, or longer if your "
                                             "organization allows it (e.g. 15m, 12h).")] = "1h",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Mint an S3 access key; its secret key is printed once, as AWS environment variables."""
    created = ApiClient.from_config().post(PATH, {"durationSeconds": parse_duration(duration),
                                                  "attributes": {"name": name}})
    if as_json:
        print_json(created)
        return
    lifetime = f"expires {when(created['expiry'])}" if created["expiry"] else "permanent"
    err.print(f"Created access key {created['accessKeyId']} ({created['name']}, {lifetime}). "
              "Copy the secret key now; it is not shown again:")
    print(f"AWS_ACCESS_KEY_ID={created['accessKeyId']}")
    print(f"AWS_SECRET_ACCESS_KEY={created['secretKey']}")


def list_keys(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List your access keys (never their secrets)."""
    items = ApiClient.from_config().get_all(PATH)
    if as_json:
        print_json(items)
    elif not items:
        out.print("No access keys yet. Create one with: tokensmith access-key create --name NAME")
    else:
        out.print(keys_table(items))


def delete(access_key_id: Annotated[str, typer.Argument(help="The access key id, e.g. TSMT...")]) -> None:
    """Delete (revoke) an access key; signatures made with it stop verifying at once."""
    ApiClient.from_config().delete(f"{PATH}/{access_key_id}")
    out.print(f"deleted {access_key_id}")


def admin_reencrypt() -> None:
    """Re-encrypt every stored S3 secret key under the first key of TOKENSMITH_ENCRYPTION_KEYS."""
    from tokensmith.bootstrap import prepare
    from tokensmith.clock import SystemClock
    from tokensmith.objectstore.crypto import DecryptionError, KeyRing
    from tokensmith.objectstore.service import AccessKeyService

    settings = datadir.admin_settings()
    boot = prepare(settings)
    try:
        with boot.database.session() as session, datadir.copy_progress("re-encrypting", unit="keys") as advance:
            changed = AccessKeyService(session, SystemClock(), KeyRing.from_settings(settings)).reencrypt_all(advance)
    except DecryptionError as exc:
        raise CliError(f"{exc}; nothing was changed (keep the old key in the list until reencrypt succeeds)") from None
    out.print(f"re-encrypted {changed} access key(s) under the first encryption key ({datadir.where()})")


def register(friendly: Any, admin_app: typer.Typer) -> typer.Typer:
    """Attach the commands, wrapped in the CLI's error handling, and return the access-key group."""
    app.command("create")(friendly(create))
    app.command("list")(friendly(list_keys))
    app.command("delete")(friendly(delete))
    admin_app.command("reencrypt")(friendly(admin_reencrypt))
    return app
