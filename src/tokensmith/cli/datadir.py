"""Which data directory the direct-database ``admin`` commands use, and refusing to invent one.

Run in the wrong folder, ``admin`` used to create a second database silently (a new organization,
secret key and admin password, none of it printed), then print secrets the running server refuses.
Now it names the directory and stops, unless ``tokensmith admin --init`` asks for a new one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

from tokensmith.cli.client import CliError
from tokensmith.cli.output import err
from tokensmith.config import DATABASE_FILE, SECRET_KEY_FILE, Settings

NO_DATA = 1
allow_init = False  # set by `tokensmith admin --init`


def admin_settings(*, need_database: bool = True) -> Settings:
    """The server's settings, after checking its data directory exists (CliError naming it if not)."""
    settings = Settings.from_env()
    if allow_init:
        return settings
    where = f"{settings.data_dir} (from TOKENSMITH_DATA_DIR, default ./.tokensmith)"
    missing = []
    if settings.is_sqlite and need_database and not (settings.data_dir / DATABASE_FILE).exists():
        missing.append("database")
    if settings.secret_key_env is None and not (settings.data_dir / SECRET_KEY_FILE).exists():
        missing.append("secret key")
    if missing:
        raise CliError(f"no tokensmith {' or '.join(missing)} in {where}; run this where the server runs or set "
                       "TOKENSMITH_DATA_DIR (tokensmith serve, or tokensmith admin --init, creates one)", NO_DATA)
    return settings


def admin_services() -> Any:
    from tokensmith.bootstrap import prepare

    return prepare(admin_settings())


@contextmanager
def copy_progress(what: str) -> Iterator[Any]:
    """A progress bar for a page-by-page copy on a terminal; nothing when stderr is not one."""
    with Progress(TextColumn(what), BarColumn(), DownloadColumn(), console=err, transient=True,
                  disable=not err.is_terminal) as progress:
        task = progress.add_task(what, total=None)

        def advance(done_pages: int, total_pages: int) -> None:
            # Pages are 4 KiB by default; bytes read better than pages.
            progress.update(task, completed=done_pages * 4096, total=total_pages * 4096)

        yield advance
