"""``tokensmith vpc create|list|delete`` and ``tokensmith user ...`` for admins, over the REST API.

The direct-database ``tokensmith admin`` commands stay for bootstrap and recovery; these use the
caller's login, so the server's rules and audit apply.
"""

# No `from __future__ import annotations` in a module that declares commands: see tokensmith/cli/__init__.py.

from typing import Annotated, Any

import typer

from tokensmith.cli.client import ApiClient
from tokensmith.cli.output import err, new_table, out, print_json, when

vpc_app = typer.Typer(help="Your organization's VPCs (admins add and remove them).", no_args_is_help=True)
user_app = typer.Typer(help="Your organization's users (admins).", no_args_is_help=True)
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]
VpcArg = Annotated[str, typer.Argument(help="The VPC's name or id.")]
UserArg = Annotated[str, typer.Argument(help="The user name or id (usr_...).")]


def create_vpc(
    name: Annotated[str, typer.Argument(help="A name, unique in your organization.")],
    region: Annotated[str, typer.Option(help="Where it is, e.g. eu-west-1.")],
    cidr: Annotated[str, typer.Option(help="Its address range, e.g. 10.0.0.0/16.")],
    as_json: JsonFlag = False,
) -> None:
    """Add a VPC (admins)."""
    created = ApiClient.from_config().post("/v1/vpcs", {"name": name, "region": region, "cidr": cidr})
    if as_json:
        print_json(created)
        return
    out.print(f"created VPC {created['name']} ({created['id']}), {created['cidr']} in {created['region']}")


def list_vpcs(as_json: JsonFlag = False) -> None:
    """List the organization's VPCs."""
    items = ApiClient.from_config().get_all("/v1/vpcs")
    if as_json:
        print_json(items)
        return
    if not items:
        out.print("No VPCs yet. An admin adds one with: tokensmith vpc create NAME --region R --cidr 10.0.0.0/16")
        return
    table = new_table(title="VPCs")
    table.add_column("ID", no_wrap=True)
    for column in ("Name", "Region", "CIDR", "Created"):
        table.add_column(column)
    for v in items:
        table.add_row(v["id"], v["name"], v["region"], v["cidr"], when(v["created_at"]))
    out.print(table)


def delete_vpc(vpc: VpcArg) -> None:
    """Delete a VPC (admins)."""
    ApiClient.from_config().delete(f"/v1/vpcs/{vpc}")
    out.print(f"deleted VPC {vpc}")


def create_user(
    username: Annotated[str, typer.Argument()],
    admin: Annotated[bool, typer.Option("--admin", help="Make the user an organization admin.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Create a user; their generated first password is printed once, alone on stdout."""
    created = ApiClient.from_config().post("/v1/users", {"username": username, "is_admin": admin})
    if as_json:
        print_json(created)
        return
    user = created["user"]
    err.print(f"created user {user['username']} ({user['id']}); they must change this password at first sign-in:")
    print(created["password"])


def list_users(as_json: JsonFlag = False) -> None:
    """List the organization's users."""
    items: list[dict[str, Any]] = ApiClient.from_config().get("/v1/users")
    if as_json:
        print_json(items)
        return
    table = new_table(title="Users")
    table.add_column("ID", no_wrap=True)
    for column in ("User name", "Role", "State", "Created"):
        table.add_column(column)
    for u in items:
        state = "disabled" if u["disabled"] else "must change password" if u["must_change_password"] else "active"
        table.add_row(u["id"], u["username"], "admin" if u["is_admin"] else "member", state, when(u["created_at"]))
    out.print(table)


def disable_user(user: UserArg) -> None:
    """Disable a user: their tokens and console sessions stop working at once."""
    changed = ApiClient.from_config().post(f"/v1/users/{user}/disable")
    out.print(f"disabled {changed['username']} ({changed['id']})")


def enable_user(user: UserArg) -> None:
    """Re-enable a disabled user."""
    changed = ApiClient.from_config().post(f"/v1/users/{user}/enable")
    out.print(f"enabled {changed['username']} ({changed['id']})")


def reset_password(user: UserArg, as_json: JsonFlag = False) -> None:
    """Give a user a new random password, printed once alone on stdout; they change it at next sign-in."""
    changed = ApiClient.from_config().post(f"/v1/users/{user}/reset-password")
    if as_json:
        print_json(changed)
        return
    err.print(f"new password for {changed['user']['username']} (to be changed at next sign-in):")
    print(changed["password"])


def register(friendly: Any, app: typer.Typer) -> None:
    """Attach the commands, wrapped in the CLI's error handling, as ``vpc`` and ``user``."""
    vpc_app.command("create")(friendly(create_vpc))
    vpc_app.command("list")(friendly(list_vpcs))
    vpc_app.command("delete")(friendly(delete_vpc))
    user_app.command("create")(friendly(create_user))
    user_app.command("list")(friendly(list_users))
    user_app.command("disable")(friendly(disable_user))
    user_app.command("enable")(friendly(enable_user))
    user_app.command("reset-password")(friendly(reset_password))
    app.add_typer(vpc_app, name="vpc")
    app.add_typer(user_app, name="user")
