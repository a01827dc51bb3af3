"""``tokensmith kube-credential`` (kubectl's exec plugin) and ``tokensmith kubeconfig --exec``.

``kube-credential --cluster C`` prints a ``client.authentication.k8s.io/v1`` ExecCredential with
a token for cluster C alone (scope ``kubernetes``), living at most an hour, derived from the CLI's
login: revoking the login ends it. The token is cached in a 0600 file under
``$XDG_CACHE_HOME/tokensmith/kube-credentials`` (default ``~/.cache/...``) and reused until
shortly before it expires; kubectl asks again when the ``expirationTimestamp`` it was given passes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from tokensmith.cli.client import NOT_LOGGED_IN, ApiClient, CliError
from tokensmith.cli.config import ClientConfig, config_path
from tokensmith.cli.output import err
from tokensmith.config import write_private_file
from tokensmith.kube import exec_kubeconfig, kubeconfig

# kubectl is told the credential expires this much before it does, so it never sends one that
# expires in flight; a cached one with less than REUSE_MARGIN left is replaced.
EXPIRY_MARGIN: Final = timedelta(minutes=1)
REUSE_MARGIN: Final = timedelta(minutes=5)


def cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "tokensmith" / "kube-credentials"


def _cache_file(url: str, cluster: str, login_secret: str) -> Path:
    # Keyed by the login too: signing in again (or as someone else) never reuses an old credential.
    login = hashlib.sha256(login_secret.encode()).hexdigest()
    key = hashlib.sha256(f"{url.rstrip('/')}\n{cluster}\n{login}".encode()).hexdigest()[:32]
    return cache_dir() / f"{key}.json"


def _read_cached(path: Path, now: datetime) -> tuple[str, datetime] | None:
    try:
        data = json.loads(path.read_text())
        token, expires = str(data["token"]), datetime.fromisoformat(data["expires_at"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if expires.tzinfo is None or expires - now < REUSE_MARGIN:
        return None
    return token, expires


def _write_cached(path: Path, token: str, expires: datetime) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    write_private_file(tmp, json.dumps({"token": token, "expires_at": expires.isoformat()}))
    os.replace(tmp, path)  # atomic: a concurrent kubectl never reads half a file


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def credential(cluster: str, now: datetime | None = None) -> dict[str, Any]:
    """The ExecCredential for ``cluster``: from the cache, or freshly derived from the CLI's login."""
    config = ClientConfig.load()
    if not config.url or not config.token:
        raise CliError("the tokensmith CLI is not logged in: run 'tokensmith login --web --url URL'", NOT_LOGGED_IN)
    now = now or datetime.now(UTC)
    path = _cache_file(config.url, cluster, config.token)
    cached = _read_cached(path, now)
    if cached is None:
        try:
            issued = ApiClient(config.url, config.token).post(
                f"/v1/clusters/{quote(cluster, safe='')}/kube-credential", {})
        except CliError as exc:
            path.unlink(missing_ok=True)
            if exc.exit_code == NOT_LOGGED_IN:
                raise CliError(f"tokensmith refused the CLI's login ({exc}); sign in again: tokensmith login --web",
                               NOT_LOGGED_IN) from None
            raise
        cached = issued["secret"], datetime.fromisoformat(issued["token"]["expires_at"])
        _write_cached(path, *cached)
    token, expires = cached
    return exec_kubeconfig.exec_credential(token, _timestamp(expires - EXPIRY_MARGIN))


def run_kube_credential(cluster: str) -> None:
    sys.stdout.write(json.dumps(credential(cluster)) + "\n")


def default_command() -> str:
    """How kubectl should run this CLI: this very executable when it is the installed script."""
    me = Path(sys.argv[0])
    if me.name == "tokensmith" and me.exists():
        return str(me.resolve())
    return shutil.which("tokensmith") or "tokensmith"


def write_exec_kubeconfig(clusters: list[str], output: Path | None, merge: str | None,
                          command: str | None = None) -> None:
    """``tokensmith kubeconfig --exec``: the clusters named, each with an exec user; no secret in the file."""
    client = ApiClient.from_config()
    me = client.get("/v1/whoami")
    available = client.get_all("/v1/clusters")
    chosen = []
    for ref in clusters:
        match = next((c for c in available if ref in (c["id"], c["name"])), None)
        if match is None:
            names = ", ".join(sorted(c["name"] for c in available)) or "none"
            raise CliError(f"cluster {ref!r} not found; your organization's clusters: {names}")
        if match not in chosen:
            chosen.append(match)
    org = me["organization"]["name"]
    entries = [kubeconfig.ClusterEntry(org, c["name"], c["server"], c["certificate_authority"]) for c in chosen]
    # A non-default CLI config must reach the plugin too (kubectl passes its environment through).
    env = {"TOKENSMITH_CONFIG": str(config_path())} if os.environ.get("TOKENSMITH_CONFIG") else None
    document = exec_kubeconfig.build_exec(entries, command or default_command(), env)
    if merge is not None:
        path = Path(merge).expanduser() if merge else kubeconfig.default_path()
        backup = kubeconfig.merge_into_file(path, document)
        saved = f" (backup: {backup})" if backup else ""
        err.print(f"merged {len(chosen)} cluster(s) into {path}{saved}; kubectl will run tokensmith for credentials")
    elif output is not None:
        kubeconfig.write_atomic(output, kubeconfig.render(document), backup=output.exists())
        err.print(f"wrote {output}: no secret in it; kubectl asks 'tokensmith kube-credential' for one")
    else:
        sys.stdout.write(kubeconfig.render(document))
