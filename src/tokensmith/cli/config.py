"""The CLI's own config file: server URL and a token, kept at mode 0600."""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from tokensmith.config import write_private_file


def config_path() -> Path:
    if explicit := os.environ.get("TOKENSMITH_CONFIG"):
        return Path(explicit)
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "tokensmith" / "config.toml"


@dataclass(frozen=True)
class ClientConfig:
    url: str | None
    token: str | None

    @classmethod
    def load(cls) -> ClientConfig:
        """Environment (TOKENSMITH_URL, TOKENSMITH_TOKEN) over the config file."""
        stored: dict[str, str] = {}
        path = config_path()
        if path.exists():
            try:
                stored = tomllib.loads(path.read_text())
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise ValueError(f"{path} is not valid TOML: {exc}") from None
        return cls(
            url=os.environ.get("TOKENSMITH_URL") or stored.get("url"),
            token=os.environ.get("TOKENSMITH_TOKEN") or stored.get("token"),
        )

    def save(self) -> Path:
        path = config_path()
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # json.dumps of a str is a valid TOML basic string.
        lines = [f"{key} = {json.dumps(value)}" for key, value in (("url", self.url), ("token", self.token)) if value]
        write_private_file(path, "\n".join(lines) + "\n")
        return path
