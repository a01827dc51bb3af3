"""CLI commands for the token lifecycle: rotate, scan, leak reporters and the audit export."""

# No `from __future__ import annotations` in a module that declares commands: see tokensmith/cli/__init__.py.

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from tokensmith import secrets
from tokensmith.cli import datadir
from tokensmith.cli.client import ApiClient, CliError
from tokensmith.cli.main import (
    ExpiresAt,
    ExpiresIn,
    JsonFlag,
    TokenRef,
    _admin_services,
    admin_app,
    app,
    expiry_body,
    friendly,
    resolve_token,
    token_app,
)
from tokensmith.cli.output import err, expiry_text, out, print_json
from tokensmith.errors import InvalidInput
from tokensmith.tokens.rotation import parse_grace

audit_app = typer.Typer(help="The audit log.", no_args_is_help=True)
admin_app.add_typer(audit_app, name="audit")

PROGRESS_THRESHOLD = 500
REPORTER_ENV = "TOKENSMITH_REPORTER_TOKEN"


@token_app.command("rotate")
@friendly
def token_rotate(
    token: TokenRef,
    grace: Annotated[str, typer.Option(help="How long the old secret keeps working: 0s to 7d.")] = "0s",
    expires_in: ExpiresIn = None,
    expires_at: ExpiresAt = None,
    as_json: JsonFlag = False,
) -> None:
    """Give a token a new secret (printed once); the old one works until the grace period ends.

    The expiry stays unless --expires-in or --expires-at sets a new one.
    """
    try:
        parse_grace(grace)
    except InvalidInput as exc:
        raise CliError(f"--grace: {exc.detail}", 2) from None
    body: dict[str, Any] = {"grace": grace, **expiry_body(expires_in, expires_at)}
    client = ApiClient.from_config()
    found = resolve_token(client, token)
    rotated = client.post(f"/v1/tokens/{found['id']}/rotate", body)
    if as_json:
        print_json(rotated)
        return
    err.print(f"Rotated token {rotated['token']['id']}; the old secret works for {grace}. "
              f"It expires {expiry_text(rotated['token']['expires_at'])}.")
    err.print("Copy the new secret now; it is not shown again:")
    print(rotated["secret"])


@app.command()
@friendly
def scan(
    paths: Annotated[list[Path], typer.Argument(help="Files or directories (.gitignore is respected).")],
    report: Annotated[bool, typer.Option("--report", help=f"Send findings to POST /v1/leaks (reporter credential in ${REPORTER_ENV}).")] = False,  # noqa: E501
    url: Annotated[str | None, typer.Option(help="Server for --report; default: the logged-in one.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Find tokensmith secrets in files, offline. Exit 0: none found; 1: found; 2: a path does not exist."""
    from rich.progress import Progress

    from tokensmith.cli.config import ClientConfig
    from tokensmith.leaks.scan import iter_files, scan_file

    for path in paths:
        if not path.exists():
            raise CliError(f"{path}: no such file or directory", 2)
    # Progress only for a person watching a large tree; never in pipes, logs or CI output.
    with Progress(console=err.console, transient=True, disable=not err.is_terminal) as progress:
        walking = progress.add_task("finding files", total=None)
        files = iter_files(paths)
        progress.remove_task(walking)
        task = progress.add_task("scanning", total=len(files), visible=len(files) >= PROGRESS_THRESHOLD)
        findings = []
        for file in files:
            findings.extend(scan_file(file))
            progress.advance(task)
    if as_json:  # masked like the text output: a scan report must not become a second leak
        print_json([{"path": str(f.path), "line": f.line, "secret": secrets.mask(f.secret)} for f in findings])
    for finding in [] if as_json else findings:
        out.print(finding.display(), highlight=False, soft_wrap=True)
    err.print(f"{_count(len(findings), 'secret')} found in {_count(len(files), 'file')} scanned")
    if report and findings:
        credential = os.environ.get(REPORTER_ENV)
        if not credential:
            raise CliError(f"--report needs a reporter credential in ${REPORTER_ENV}", 2)
        server = url or ClientConfig.load().url
        if not server:
            raise CliError("--report needs --url or a logged-in server", 2)
        ApiClient(server, credential).post_list("/v1/leaks", [
            {"token": f.secret, "url": f"file://{f.path.resolve()}#L{f.line}", "source": "tokensmith scan"}
            for f in findings
        ])
        err.print(f"reported {len(findings)} secret(s) to {server}")
    if findings:
        raise typer.Exit(1)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


@admin_app.command("create-reporter")
@friendly
def admin_create_reporter(
    name: Annotated[str, typer.Argument(help="Who reports, e.g. 'github-secret-scanning'.")],
) -> None:
    """Mint a leak-reporter credential for POST /v1/leaks; prints it alone on stdout, once."""
    from tokensmith.clock import SystemClock
    from tokensmith.leaks import LeakService

    boot = _admin_services()
    with boot.database.session() as session:
        created = LeakService(session, SystemClock(), boot.secret_key).create_reporter(name)
        err.print(f"created reporter {created.reporter.name} ({created.reporter.public_id}) ({datadir.where()})")
    print(created.secret)


@audit_app.command("export")
@friendly
def admin_audit_export(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File to write; default stdout.")] = None,
    org: Annotated[str | None, typer.Option(help="Only this organization (name).")] = None,
) -> None:
    """Write every audit event as JSON Lines, oldest first."""
    from sqlalchemy import select

    from tokensmith.audit.query import as_record
    from tokensmith.cli.datadir import admin_settings
    from tokensmith.db.database import Database
    from tokensmith.db.models import AuditEvent, Organization

    # Read-only: no migration, no secret key needed, nothing created.
    database = Database(admin_settings(need_secret_key=False).database_url)
    handle = output.open("w", encoding="utf-8") if output else None
    count = 0
    try:
        with database.session() as session:
            orgs = {o.id: o.name for o in session.scalars(select(Organization))}
            query = select(AuditEvent).order_by(AuditEvent.id)
            if org is not None:
                ids = [i for i, n in orgs.items() if n == org]
                if not ids:
                    raise CliError(f"organization {org!r} not found")
                query = query.where(AuditEvent.org_id == ids[0])
            for e in session.scalars(query.execution_options(yield_per=500)):
                line = json.dumps(as_record(e, orgs.get(e.org_id) if e.org_id else None), ensure_ascii=False)
                if handle:
                    handle.write(line + "\n")
                else:
                    print(line)
                count += 1
    finally:
        database.dispose()
        if handle:
            handle.close()
    err.print(f"exported {count} audit event(s)")
