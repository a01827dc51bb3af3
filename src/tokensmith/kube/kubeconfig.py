"""Build the kubeconfig ``kubectl`` expects for a token and the clusters it grants.

Names are deterministic and unique across organizations (``<org>-<cluster>``, user
``<org>-<token id>``), so files can be merged with others through ``KUBECONFIG=a:b``.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import stat
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tokensmith import durations, secrets

# yaml is imported by render and parse: kubectl's exec plugin (``tokensmith kube-credential``, on every
# kubectl call) uses this module's names but never reads or writes YAML, and the import costs ~30 ms.


@dataclass(frozen=True)
class ClusterEntry:
    """What a kubeconfig needs of a cluster."""

    org: str
    name: str
    server: str
    certificate_authority: str  # PEM


def cluster_name(org: str, cluster: str) -> str:
    return f"tokensmith-{org}-{cluster}"


def user_name(org: str, token_public_id: str) -> str:
    return f"tokensmith-{org}-{token_public_id}"


def build(clusters: Sequence[ClusterEntry], secret: str, org: str, token_public_id: str) -> dict[str, Any]:
    """The kubeconfig as a dict: one cluster and one context per granted cluster, one user."""
    if not clusters:
        raise ValueError("a kubeconfig needs at least one cluster")
    user = user_name(org, token_public_id)
    cluster_entries, contexts = [], []
    for entry in clusters:
        name = cluster_name(entry.org, entry.name)
        cluster_entries.append({
            "name": name,
            "cluster": {
                "server": entry.server,
                "certificate-authority-data": base64.b64encode(entry.certificate_authority.encode()).decode(),
            },
        })
        contexts.append({"name": name, "context": {"cluster": name, "user": user}})
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": cluster_entries,
        "users": [{"name": user, "user": {"token": secret}}],
        "contexts": contexts,
        "current-context": contexts[0]["name"],
    }


def render(config: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(config, sort_keys=False, default_flow_style=False)


SLUG_LENGTH = 40


def file_slug(name: str, fallback: str) -> str:
    """``name`` as part of a file name safe on every OS: ASCII letters, digits and ``._-`` only,
    at most 40 characters, never starting or ending with a separator; ``fallback`` if nothing is left."""
    # Cut before stripping, so the cut never leaves a separator at the end.
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name)[:SLUG_LENGTH].strip("-._")
    return slug or fallback


def filename(token_public_id: str, token_name: str) -> str:
    """``kubeconfig-<token id>-<name>.yaml`` for a token's kubeconfig."""
    return f"kubeconfig-{token_public_id}-{file_slug(token_name, 'token')}.yaml"


def webhook_filename(cluster_name: str) -> str:
    """``tokensmith-webhook-<cluster>.yaml`` for a cluster API server's webhook kubeconfig."""
    return f"tokensmith-webhook-{file_slug(cluster_name, 'cluster')}.yaml"


# --- merging into an existing kubeconfig -------------------------------------------------------

SECTIONS = ("clusters", "users", "contexts")
TOKENSMITH_PREFIX = "tokensmith-"


class KubeconfigError(ValueError):
    """A kubeconfig that cannot be read or safely written; the message names the file and the fix."""


def parse(text: str, source: str = "kubeconfig") -> dict[str, Any]:
    """A kubeconfig document from YAML text; KubeconfigError if it is not one. Empty text is an empty config."""
    import yaml

    try:
        document = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise KubeconfigError(f"{source} is not valid YAML{where}; fix or move it, it was left untouched") from None
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise KubeconfigError(f"{source} is not a kubeconfig (expected a mapping); it was left untouched")
    for section in SECTIONS:
        entries = document.get(section)
        if entries is None:
            continue
        if not isinstance(entries, list) or not all(
            isinstance(e, dict) and isinstance(e.get("name"), str) for e in entries
        ):
            raise KubeconfigError(f"{source}: {section} must be a list of named entries; it was left untouched")
    return document


def merge(existing: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``existing`` with ``new``'s clusters, users and contexts added; same-named entries are replaced in place.

    Everything else in ``existing`` survives as it was, including its current-context (``new``'s is
    used only when there is none). tokensmith users no context refers to any more (older secrets
    for the same clusters) are dropped, so no stale secret lingers in the file.
    """
    merged = dict(existing)
    merged.setdefault("apiVersion", "v1")
    merged.setdefault("kind", "Config")
    for section in SECTIONS:
        entries = list(existing.get(section) or [])
        index = {entry["name"]: i for i, entry in enumerate(entries)}
        for entry in new.get(section) or []:
            if entry["name"] in index:
                entries[index[entry["name"]]] = entry
            else:
                index[entry["name"]] = len(entries)
                entries.append(entry)
        merged[section] = entries
    used = {(c.get("context") or {}).get("user") for c in merged["contexts"]}
    merged["users"] = [u for u in merged["users"] if not u["name"].startswith(TOKENSMITH_PREFIX) or u["name"] in used]
    if not merged.get("current-context") and new.get("current-context"):
        merged["current-context"] = new["current-context"]
    return merged


def default_path(environ: dict[str, str] | None = None) -> Path:
    """Where kubectl writes by default: ``$KUBECONFIG``'s first file, else ``~/.kube/config``."""
    return search_paths(environ)[0]


def search_paths(environ: dict[str, str] | None = None) -> list[Path]:
    """Every file kubectl reads: each of ``$KUBECONFIG``'s files once, in order, else ``~/.kube/config``.

    kubectl merges all of them, so a stale or world-readable token in the third file leaks just
    as well as one in the first.
    """
    env = os.environ if environ is None else environ
    listed = [Path(item).expanduser() for item in (env.get("KUBECONFIG") or "").split(os.pathsep) if item]
    return list(dict.fromkeys(listed)) or [Path.home() / ".kube" / "config"]


def write_atomic(path: Path, text: str, *, backup: bool = True) -> Path | None:
    """Write ``text`` to ``path`` atomically (temporary file in the same directory, then rename).

    A new file gets mode 0600; an existing one keeps its mode minus any group/other bits, so
    permissions are never loosened. With ``backup``, an existing file is first copied to
    ``<name>.<UTC time>.bak`` (mode 0600), whose path is returned. A crash before the rename
    leaves the original untouched.
    """
    path = Path(os.path.realpath(path))
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    mode = 0o600
    backup_path = None
    if path.exists():
        mode = stat.S_IMODE(path.stat().st_mode) & 0o600
        if backup:
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
            backup_path = path.with_name(f"{path.name}.{stamp}.bak")
            _write_new(backup_path, path.read_bytes())
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(text.encode())
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return backup_path


def _write_new(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def merge_into_file(path: Path, new: dict[str, Any], *, keep_backup: bool = False) -> Path | None:
    """Merge ``new`` into the kubeconfig at ``path`` (created if missing); returns the kept backup's path.

    The existing file is first copied to a 0600 backup. Once the merged file has been read back
    and found to be exactly what was meant, the backup is removed (it holds the old secrets) unless
    ``keep_backup``; if the check fails, the backup stays and KubeconfigError names it.
    Raises KubeconfigError, before writing anything, if the existing file is not a kubeconfig.
    """
    existing: dict[str, Any] = {}
    if path.exists():
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise KubeconfigError(f"cannot read {path}: {exc}") from None
        existing = parse(text, str(path))
    merged = render(merge(existing, new))
    backup = write_atomic(path, merged, backup=path.exists())
    if backup is None:
        return None
    try:
        verified = Path(os.path.realpath(path)).read_text() == merged and bool(parse(merged, str(path)))
    except (OSError, UnicodeDecodeError, KubeconfigError):
        verified = False
    if not verified:
        raise KubeconfigError(f"{path} does not read back as written; the previous file is kept in {backup}")
    if keep_backup:
        return backup
    backup.unlink()
    return None


# --- best-practice check -------------------------------------------------------------------------

EXPIRY_WARNING = timedelta(days=7)


@dataclass(frozen=True)
class TokenState:
    """What tokensmith says about a secret: live (with its expiry), expired, revoked or unknown."""

    state: str  # "live", "expired", "invalid", "unchecked"
    expires_at: datetime | None = None
    token_id: str | None = None
    # For a live token: what identifies the clusters it grants in a kubeconfig (cluster entry names as
    # tokensmith writes them, tokensmith names and ids, API server URLs). None: not known.
    grants: frozenset[str] | None = None


def find_git_worktree(path: Path) -> Path | None:
    """The root of the git working tree containing ``path``, if any (a leaked kubeconfig's usual way out)."""
    for directory in Path(os.path.realpath(path)).parents:
        if (directory / ".git").exists():
            return directory
    return None


def check(path: Path, token_state: Callable[[str], TokenState], now: datetime) -> list[str]:
    """The best-practice problems of the kubeconfig at ``path``, one sentence each (empty: none).

    ``token_state`` asks tokensmith about each tokensmith secret in the file (GET /v1/whoami).
    Raises KubeconfigError if the file cannot be read as a kubeconfig.
    """
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise KubeconfigError(f"cannot read {path}: {exc}") from None
    document = parse(text, str(path))
    problems = []
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        problems.append(f"{path} is readable by group or others (mode {mode:04o}); run: chmod 600 {path}")
    worktree = find_git_worktree(path)
    if worktree is not None:
        problems.append(f"{path} is inside the git working tree {worktree}; move it out so it is never committed")
    servers = {c["name"]: (c.get("cluster") or {}).get("server") for c in document.get("clusters") or []
               if isinstance(c, dict)}
    for user in document.get("users") or []:
        token = (user.get("user") or {}).get("token")
        if not isinstance(token, str) or not secrets.is_well_formed(token):
            continue
        state = token_state(token)
        label = f"{path}: user {user['name']!r} (tokensmith token {state.token_id or secrets.mask(token)})"
        if state.state == "expired":
            problems.append(f"{label} has expired; replace it: tokensmith token create --name NAME --cluster CLUSTER "
                            "--kubeconfig --merge")
        elif state.state == "invalid":
            problems.append(f"{label} is revoked or unknown; remove it or replace it with a live token")
        elif state.state == "live" and state.expires_at is not None and state.expires_at - now <= EXPIRY_WARNING:
            left = durations.humanize(state.expires_at - now) if state.expires_at > now else "none"
            problems.append(f"{label} expires within 7 days ({state.expires_at:%Y-%m-%d %H:%M} UTC, {left} left)")
        if state.state != "live" or state.grants is None:
            continue
        for context in document.get("contexts") or []:
            entry = context.get("context") or {}
            if entry.get("user") != user["name"]:
                continue
            cluster = entry.get("cluster")
            if cluster in state.grants or servers.get(cluster) in state.grants:
                continue
            problems.append(f"{label} does not grant cluster {cluster!r} (context {context['name']!r}); its API "
                            "server will refuse it: create a token with --cluster for it")
    return problems
