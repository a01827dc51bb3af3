"""The ``tokensmith`` command.

Start-up cost matters here: kubectl runs ``tokensmith kube-credential`` on every call, and every command
pays for what the CLI imports and builds before it runs. So:

- modules that only some commands need (httpx, rich, yaml, the database layer) are imported inside those
  commands, or behind ``output.LazyConsole``/``output.new_table``;
- the modules that declare commands (main, kube, access_keys, clusters, org, federation, lifecycle) do not use
  ``from __future__ import annotations``: typer evaluates every command's annotations on every run, and
  string annotations cost a ``compile`` each (~40 ms a run for the ~50 commands).

``tests/test_cli_local.py`` checks what the client commands import.
"""
