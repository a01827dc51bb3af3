"""Which data directory the direct-database ``admin`` commands use, and refusing to invent one.

Run in the wrong folder, ``admin`` used to create a second database silently (a new organization,
secret key and admin password, none of it printed), then print secrets the running server refuses.
Now it names the directory and stops, unless ``tokensmith admin --init`` asks for a new one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tokensmith.cli.client import CliError
from tokensmith.cli.output import err
from tokensmith.config import DATABASE_FILE, SECRET_KEY_FILE, Settings

NO_DATA = 1
allow_init = False  # set by `tokensmith admin --init`


def _sqlite_file(settings: Settings) -> Path:
    from sqlalchemy.engine import make_url

    name = make_url(settings.database_url).database
    return Path(name) if name and name != ":memory:" else settings.data_dir / DATABASE_FILE


def admin_settings(*, need_secret_key: bool = True) -> Settings:
    """The server's settings, after checking its data directory exists (CliError naming it if not)."""
    settings = Settings.from_env()
    if allow_init:
        return settings
    where = f"{settings.data_dir} (from TOKENSMITH_DATA_DIR, default ./.tokensmith)"
    missing = []
    if settings.is_sqlite and not _sqlite_file(settings).exists():
        missing.append("database")
    # A new secret key would make every digest this command writes unverifiable by the running server.
    if need_secret_key and settings.secret_key_env is None and not (settings.data_dir / SECRET_KEY_FILE).exists():
        missing.append("secret key")
    if missing:
        raise CliError(f"no tokensmith {' or '.join(missing)} in {where}; run this where the server runs or set "
                       "TOKENSMITH_DATA_DIR (tokensmith serve, or tokensmith admin --init, creates one)", NO_DATA)
    return settings


def admin_services() -> Any:
    from tokensmith.bootstrap import prepare

    return prepare(admin_settings())


def where() -> str:
    """The data directory (and database, when not SQLite) admin commands act on, for their messages."""
    settings = Settings.from_env()
    if settings.is_sqlite:
        return f"data directory {settings.data_dir}"
    from sqlalchemy.engine import make_url

    return f"data directory {settings.data_dir}, database {make_url(settings.database_url).render_as_string()}"


@contextmanager
def copy_progress(what: str, unit: str = "pages") -> Iterator[Callable[[int, int], None]]:
    """A progress bar on a terminal, advanced with ``(done, total)``; nothing when stderr is not one.

    ``unit="pages"``: SQLite pages, shown as bytes (4 KiB pages by default); otherwise a count.
    """
    from rich.progress import BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn

    columns: list[Any] = [TextColumn(what), BarColumn()]
    columns.append(DownloadColumn() if unit == "pages" else MofNCompleteColumn())
    size = 4096 if unit == "pages" else 1
    with Progress(*columns, console=err.console, transient=True, disable=not err.is_terminal) as progress:
        task = progress.add_task(what, total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done * size, total=total * size)

        yield advance
