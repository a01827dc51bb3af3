"""Offline secret scanning of files: format and checksum decide, so look-alikes are ignored.

Walks directories respecting every ``.gitignore`` on the way down (and never enters ``.git``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pathspec

from tokensmith import secrets

MAX_FILE_BYTES: Final = 10 * 1024 * 1024
_BINARY_SNIFF: Final = 8192


@dataclass(frozen=True)
class Finding:
    path: Path
    line: int
    secret: str

    def display(self) -> str:
        """``file:line: tsm_…abcd``: where it is, never the secret itself."""
        return f"{self.path}:{self.line}: {secrets.mask(self.secret)}"


def _ignored(path: Path, is_dir: bool, specs: list[tuple[Path, pathspec.PathSpec]]) -> bool:
    for base, spec in specs:
        relative = path.relative_to(base).as_posix() + ("/" if is_dir else "")
        if spec.match_file(relative):
            return True
    return False


def iter_files(paths: Iterable[Path]) -> list[Path]:
    """Every regular file under ``paths`` that git would not ignore, in a stable order."""
    found: list[Path] = []
    for root in paths:
        if root.is_file():
            found.append(root)
            continue
        inherited: dict[Path, list[tuple[Path, pathspec.PathSpec]]] = {root: []}
        for directory, dirnames, filenames in os.walk(root):
            here = Path(directory)
            specs = list(inherited.pop(here, []))
            gitignore = here / ".gitignore"
            if gitignore.is_file():
                lines = gitignore.read_text(errors="replace").splitlines()
                specs.append((here, pathspec.GitIgnoreSpec.from_lines(lines)))
            dirnames[:] = sorted(d for d in dirnames if d != ".git" and not _ignored(here / d, True, specs))
            for d in dirnames:
                inherited[here / d] = specs
            found.extend(here / f for f in sorted(filenames)
                         if not _ignored(here / f, False, specs) and (here / f).is_file())
    return found


def scan_file(path: Path) -> list[Finding]:
    """The valid secrets in one text file, with 1-based line numbers; binary or huge files are skipped."""
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            return []
        data = path.read_bytes()
    except OSError:
        return []
    if b"\0" in data[:_BINARY_SNIFF]:
        return []
    text = data.decode("utf-8", errors="replace")
    return [Finding(path, text.count("\n", 0, offset) + 1, secret) for offset, secret in secrets.find_in_text(text)]
