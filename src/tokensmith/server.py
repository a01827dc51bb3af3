"""Run the ASGI app with uvicorn: prepare the data directory and database, then serve."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from tokensmith import logs
from tokensmith.api.app import create_app
from tokensmith.bootstrap import INITIAL_PASSWORD_FILE, Bootstrap, prepare
from tokensmith.config import Settings
from tokensmith.kube import tls
from tokensmith.protocols import HeaderTimeoutH11Protocol, HeaderTimeoutHttpToolsProtocol, HttpToolsProtocol

log = logging.getLogger("tokensmith")


# What run() prepared, for build_app when uvicorn calls it in the same process (one worker): preparing
# again there only repeated the migration check and, after a first start, the stale-password check's
# argon2 verification, ~0.5 s of every start.
_prepared: Bootstrap | None = None


def build_app() -> FastAPI:
    """Factory used by uvicorn (also with several workers): every worker prepares idempotently."""
    global _prepared
    settings = Settings.from_env()
    logs.configure(settings.log_format, settings.log_level)  # again: --workers N spawns fresh processes
    boot, _prepared = _prepared, None
    if boot is None:
        boot = prepare(settings)
        _announce_first_start(settings, boot)
    return create_app(settings, boot.database, boot.secret_key, background_worker=True, freeze_heap=True)


def _announce_first_start(settings: Settings, boot: Bootstrap) -> None:
    if boot.initial_admin_password is None:
        return
    # Kept in a 0600 file. Shown on the screen of an interactive first start only: stdout
    # redirected to a file or a log collector would keep the password for good.
    shown = f"  Initial admin password: {boot.initial_admin_password}\n" if sys.stdout.isatty() else ""
    print(
        f"\n  Created organization 'default' and admin user 'admin'.\n{shown}"
        f"  The initial admin password is in {settings.data_dir / INITIAL_PASSWORD_FILE} (mode 0600);\n"
        f"  it must be changed at first sign-in.\n",
        flush=True,
    )


def run(host: str, port: int, workers: int = 1, tls_cert: Path | None = None, tls_key: Path | None = None) -> None:
    """Serve; over HTTPS with ``tls_cert``/``tls_key`` (else TOKENSMITH_TLS_CERT/TOKENSMITH_TLS_KEY)."""
    settings = Settings.from_env()
    # One redacting handler for everything (TOKENSMITH_LOG_FORMAT=json for JSON lines); uvicorn's
    # own logging config is off so its access and error logs go through it too.
    logs.configure(settings.log_format, settings.log_level)
    serving = tls.serving_files(tls_cert or settings.tls_cert, tls_key or settings.tls_key)
    if serving is not None:
        log.info("serving HTTPS with %s", serving.cert)
    # The data directory, migrations and first admin, once, before any worker starts: with
    # --workers N every worker would otherwise race to migrate and to create the first organization
    # (one lost on its UNIQUE name and died at start). Each worker still prepares, finding it done.
    global _prepared
    boot = prepare(settings)
    _announce_first_start(settings, boot)
    boot.database.dispose()  # no connection of this process's is used by a worker; one worker reconnects
    if workers == 1:  # uvicorn calls build_app here, in this process
        _prepared = boot
    uvicorn.run(
        "tokensmith.server:build_app", factory=True, host=host, port=port, workers=workers,
        proxy_headers=False, server_header=False, log_config=None, log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=10,
        ssl_certfile=str(serving.cert) if serving else None, ssl_keyfile=str(serving.key) if serving else None,
        # Slow clients (docs/operations.md, "Request limits"): a bound on connections and tasks
        # (503 beyond it), idle keep-alive connections closed, headers at most 16 KiB and due
        # within the header timeout.
        http=HeaderTimeoutHttpToolsProtocol if HttpToolsProtocol is not None else HeaderTimeoutH11Protocol,
        limit_concurrency=settings.max_connections,
        timeout_keep_alive=settings.keep_alive_timeout_seconds,
        h11_max_incomplete_event_size=16 * 1024,  # h11; httptools caps a header line at 80 KiB itself
    )
