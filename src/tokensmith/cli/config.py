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
    # The id of the CLI's own token (set by login): marked in `token list`, replaced by the next login.
    token_id: str | None = None
    # The server the last login used, so a plain `tokensmith login` needs no --url.
    stored_url: str | None = None

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
        env_token = os.environ.get("TOKENSMITH_TOKEN")
        return cls(
            url=os.environ.get("TOKENSMITH_URL") or stored.get("url"),
            token=env_token or stored.get("token"),
            token_id=None if env_token else stored.get("token_id"),
            stored_url=stored.get("url"),
        )

    def save(self) -> Path:
        path = config_path()
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # json.dumps of a str is a valid TOML basic string.
        fields = (("url", self.url), ("token", self.token), ("token_id", self.token_id))
        lines = [f"{key} = {json.dumps(value)}" for key, value in fields if value]
        write_private_file(path, "\n".join(lines) + "\n")
        return path
