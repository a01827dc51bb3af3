"""``--help`` without a ``<bool>`` type on every flag.

Typer's rich help prints each option's type; for an on/off flag that is noise (``--json <bool>``
reads as if it took a value). Flags show no type; options that take a value keep theirs.
"""

from __future__ import annotations

from typing import Any

from typer import _click
from typer.core import TyperOption

_typed = TyperOption.display_type_rich


def _display_type_rich(self: TyperOption, ctx: _click.Context) -> Any:  # typer ships its own click
    return None if self.is_flag else _typed(self, ctx)


TyperOption.display_type_rich = _display_type_rich  # type: ignore[method-assign]
