"""Expected failures become one clear line and a documented exit code, never a traceback.

Exit codes: 1 the request failed, 2 bad usage (Click's and ours), 3 not logged in, login expired or not
authorized (401/403), 4 ``serve``: the address is in use. README.md has the table.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from tokensmith.cli.client import CliError
from tokensmith.cli.output import err
from tokensmith.errors import TokensmithError

F = TypeVar("F", bound=Callable[..., Any])


def friendly(func: F) -> F:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except CliError as exc:
            err.print(f"error: {exc}")
            raise typer.Exit(exc.exit_code) from None
        except TokensmithError as exc:
            err.print(f"error: {exc.detail}")
            raise typer.Exit(3 if exc.status in (401, 403) else 1) from None
        except (ValueError, OSError) as exc:
            err.print(f"error: {exc}")
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]
