"""Run the ASGI app with uvicorn: prepare the data directory and database, then serve."""

from __future__ import annotations

import logging

import uvicorn
from fastapi import FastAPI

from tokensmith import logs
from tokensmith.api.app import create_app
from tokensmith.bootstrap import INITIAL_PASSWORD_FILE, prepare
from tokensmith.config import Settings

log = logging.getLogger("tokensmith")


def build_app() -> FastAPI:
    """Factory used by uvicorn (also with several workers): every worker prepares idempotently."""
    settings = Settings.from_env()
    logs.configure(settings.log_format, settings.log_level)  # again: --workers N spawns fresh processes
    boot = prepare(settings)
    if boot.initial_admin_password is not None:
        # Printed once, on the start that created the admin; also kept in a 0600 file.
        print(
            f"\n  Created organization 'default' and admin user 'admin'.\n"
            f"  Initial admin password: {boot.initial_admin_password}\n"
            f"  (also written to {settings.data_dir / INITIAL_PASSWORD_FILE}, mode 0600)\n",
            flush=True,
        )
    return create_app(settings, boot.database, boot.secret_key, background_worker=True)


def run(host: str, port: int, workers: int = 1) -> None:
    settings = Settings.from_env()
    # One redacting handler for everything (TOKENSMITH_LOG_FORMAT=json for JSON lines); uvicorn's
    # own logging config is off so its access and error logs go through it too.
    logs.configure(settings.log_format, settings.log_level)
    uvicorn.run(
        "tokensmith.server:build_app", factory=True, host=host, port=port, workers=workers,
        proxy_headers=False, server_header=False, log_config=None, log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=10,
    )
