"""Kubeconfig files: what kubectl reads, merging into an existing file, atomic 0600 writes, and check."""

import os
import stat
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from tests.kubetools import kubectl_binary
from tests.pki import CA_PEM
from tokensmith import secrets
from tokensmith.kube import kubeconfig
from tokensmith.kube.kubeconfig import ClusterEntry, KubeconfigError, TokenState


def kubectl(config: Path, *args: str, cache: Path) -> str:
    result = subprocess.run([kubectl_binary(), "--kubeconfig", str(config), *args], capture_output=True, text=True,
                            env={**os.environ, "KUBECACHEDIR": str(cache)}, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def make_config(secret: str, clusters=("prod", "staging"), org="acme", token_id="tok_abc"):
    entries = [ClusterEntry(org, name, f"https://10.0.0.{i + 1}:6443", CA_PEM) for i, name in enumerate(clusters)]
    return kubeconfig.build(entries, secret, org, token_id)


@pytest.fixture
def secret():
    return secrets.generate()


@pytest.fixture
def existing(tmp_path):
    """A kubeconfig someone already uses: another cluster, user, context and their own current-context."""
    path = tmp_path / "kube" / "config"
    path.parent.mkdir()
    document = {
        "apiVersion": "v1", "kind": "Config",
        "preferences": {"colors": True},
        "clusters": [{"name": "home", "cluster": {"server": "https://192.168.1.10:6443",
                                                   "insecure-skip-tls-verify": True}}],
        "users": [{"name": "me", "user": {"client-certificate-data": "Y2VydA==", "client-key-data": "a2V5"}}],
        "contexts": [{"name": "home", "context": {"cluster": "home", "user": "me", "namespace": "lab"}}],
        "current-context": "home",
    }
    path.write_text(yaml.safe_dump(document))
    path.chmod(0o600)
    return path, document


# --- what kubectl reads ---------------------------------------------------------------------------


def test_kubectl_prints_the_secret_with_the_documented_jsonpath(tmp_path, secret):
    path = tmp_path / "k.yaml"
    path.write_text(kubeconfig.render(make_config(secret)))
    printed = kubectl(path, "config", "view", "--raw", "-o", "jsonpath={.users[0].user.token}", cache=tmp_path)
    assert printed == secret


def test_kubectl_lists_a_context_per_cluster_and_switches(tmp_path, secret):
    path = tmp_path / "k.yaml"
    path.write_text(kubeconfig.render(make_config(secret)))
    contexts = kubectl(path, "config", "get-contexts", "-o", "name", cache=tmp_path).split()
    assert sorted(contexts) == ["tokensmith-acme-prod", "tokensmith-acme-staging"]
    assert kubectl(path, "config", "current-context", cache=tmp_path).strip() == "tokensmith-acme-prod"
    kubectl(path, "config", "use-context", "tokensmith-acme-staging", cache=tmp_path)
    assert kubectl(path, "config", "current-context", cache=tmp_path).strip() == "tokensmith-acme-staging"
    server = kubectl(path, "config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}",
                     cache=tmp_path)
    assert server == "https://10.0.0.2:6443"


def test_names_do_not_clash_across_organizations_with_kubeconfig_a_colon_b(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(kubeconfig.render(make_config(secrets.generate(), ("prod",), org="acme", token_id="tok_1")))
    b.write_text(kubeconfig.render(make_config(secrets.generate(), ("prod",), org="globex", token_id="tok_2")))
    result = subprocess.run([kubectl_binary(), "config", "get-contexts", "-o", "name"], capture_output=True,
                            text=True, timeout=60, env={**os.environ, "KUBECONFIG": f"{a}:{b}",
                                                        "KUBECACHEDIR": str(tmp_path)})
    assert sorted(result.stdout.split()) == ["tokensmith-acme-prod", "tokensmith-globex-prod"]


# --- merging ----------------------------------------------------------------------------------------


def test_merge_keeps_every_other_entry_and_the_current_context(existing, secret):
    path, before = existing
    kubeconfig.merge_into_file(path, make_config(secret))
    after = yaml.safe_load(path.read_text())
    assert after["current-context"] == "home"
    assert after["preferences"] == {"colors": True}
    for section in ("clusters", "users", "contexts"):
        assert after[section][0] == before[section][0]
    assert [c["name"] for c in after["clusters"]] == ["home", "tokensmith-acme-prod", "tokensmith-acme-staging"]
    assert [u["name"] for u in after["users"]] == ["me", "tokensmith-acme-tok_abc"]


def test_merge_with_keep_backup_keeps_0600_and_a_0600_backup_of_the_original(existing, secret):
    path, _ = existing
    original = path.read_bytes()
    backup = kubeconfig.merge_into_file(path, make_config(secret), keep_backup=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert backup is not None and backup.read_bytes() == original
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600


def test_merge_removes_its_backup_once_the_merged_file_is_verified(existing, secret):
    path, _ = existing
    assert kubeconfig.merge_into_file(path, make_config(secret)) is None
    assert not list(path.parent.glob(f"{path.name}.*.bak"))  # the old secrets do not linger in a copy


def test_a_merge_that_does_not_read_back_keeps_the_backup_and_says_where(existing, secret, monkeypatch):
    path, _ = existing
    original = path.read_bytes()
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (real_replace(src, dst), Path(dst).write_text("garbled")))
    with pytest.raises(kubeconfig.KubeconfigError, match="kept in"):
        kubeconfig.merge_into_file(path, make_config(secret))
    [backup] = path.parent.glob(f"{path.name}.*.bak")
    assert backup.read_bytes() == original and stat.S_IMODE(backup.stat().st_mode) == 0o600


def test_merge_never_loosens_permissions(existing, secret):
    path, _ = existing
    path.chmod(0o400)
    kubeconfig.merge_into_file(path, make_config(secret))
    assert stat.S_IMODE(path.stat().st_mode) == 0o400
    path.chmod(0o644)  # someone else's mistake: tightened, never kept group/world-readable
    kubeconfig.merge_into_file(path, make_config(secret))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_merging_the_same_clusters_again_does_not_duplicate(existing, secret):
    path, _ = existing
    kubeconfig.merge_into_file(path, make_config(secret))
    newer = secrets.generate()
    kubeconfig.merge_into_file(path, make_config(newer, token_id="tok_new"))
    after = yaml.safe_load(path.read_text())
    assert [c["name"] for c in after["clusters"]] == ["home", "tokensmith-acme-prod", "tokensmith-acme-staging"]
    assert [c["name"] for c in after["contexts"]] == ["home", "tokensmith-acme-prod", "tokensmith-acme-staging"]
    # The older secret is gone: no context uses it any more.
    assert [u["name"] for u in after["users"]] == ["me", "tokensmith-acme-tok_new"]
    assert secret not in path.read_text()


def test_merge_creates_a_missing_file_with_0600_and_its_current_context(tmp_path, secret):
    path = tmp_path / "new" / "config"
    assert kubeconfig.merge_into_file(path, make_config(secret)) is None
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert yaml.safe_load(path.read_text())["current-context"] == "tokensmith-acme-prod"


def test_a_crash_between_write_and_rename_leaves_the_original_intact(existing, secret, monkeypatch):
    path, _ = existing
    original = path.read_bytes()

    def crash(src, dst):
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(kubeconfig.os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        kubeconfig.merge_into_file(path, make_config(secret))
    assert path.read_bytes() == original
    assert not list(path.parent.glob(".config.*.tmp"))


@pytest.mark.parametrize("garbage", ["{{{ not: yaml", "- just\n- a list\n", "clusters: 42\n", "\t\x00bad"])
def test_garbage_in_the_file_to_merge_is_a_clear_error_and_the_file_is_untouched(tmp_path, secret, garbage):
    path = tmp_path / "config"
    path.write_text(garbage)
    with pytest.raises(KubeconfigError, match="left untouched"):
        kubeconfig.merge_into_file(path, make_config(secret))
    assert path.read_text() == garbage
    assert list(tmp_path.iterdir()) == [path]  # no backup, no temporary file


def test_kubectl_reads_the_merged_file(existing, secret):
    path, _ = existing
    kubeconfig.merge_into_file(path, make_config(secret))
    contexts = kubectl(path, "config", "get-contexts", "-o", "name", cache=path.parent).split()
    assert sorted(contexts) == ["home", "tokensmith-acme-prod", "tokensmith-acme-staging"]
    assert kubectl(path, "config", "current-context", cache=path.parent).strip() == "home"


def test_default_path_is_kubeconfigs_first_file_else_home(tmp_path):
    assert kubeconfig.default_path({"KUBECONFIG": f"{tmp_path}/a:{tmp_path}/b"}) == tmp_path / "a"
    assert kubeconfig.default_path({}) == Path.home() / ".kube" / "config"


def test_search_paths_are_every_kubeconfig_file_once_in_order(tmp_path):
    listed = f"{tmp_path}/a:{tmp_path}/b::{tmp_path}/a"
    assert kubeconfig.search_paths({"KUBECONFIG": listed}) == [tmp_path / "a", tmp_path / "b"]


def test_search_paths_default_to_the_home_kubeconfig():
    assert kubeconfig.search_paths({}) == [Path.home() / ".kube" / "config"]


# --- check ------------------------------------------------------------------------------------------

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def checked(path, states=None):
    return kubeconfig.check(path, lambda s: (states or {}).get(s, TokenState("live", NOW + timedelta(days=30))), NOW)


def test_a_clean_private_file_has_no_problems(tmp_path, secret):
    path = tmp_path / "config"
    kubeconfig.write_atomic(path, kubeconfig.render(make_config(secret)))
    assert checked(path) == []


def test_check_reports_group_or_world_readable(tmp_path, secret):
    path = tmp_path / "config"
    path.write_text(kubeconfig.render(make_config(secret)))
    path.chmod(0o644)
    [problem] = checked(path)
    assert "readable by group or others (mode 0644)" in problem and "chmod 600" in problem


def test_check_reports_a_file_inside_a_git_working_tree(tmp_path, secret):
    (tmp_path / "repo" / ".git").mkdir(parents=True)
    path = tmp_path / "repo" / "deploy" / "kubeconfig"
    kubeconfig.write_atomic(path, kubeconfig.render(make_config(secret)))
    [problem] = checked(path)
    assert "git working tree" in problem and str(tmp_path / "repo") in problem


def test_check_reports_expired_revoked_and_soon_expiring_tokens(tmp_path):
    expired, revoked, soon = secrets.generate(), secrets.generate(), secrets.generate()
    document = make_config(expired)
    document = kubeconfig.merge(document, make_config(revoked, ("dev",), token_id="tok_r"))
    document = kubeconfig.merge(document, make_config(soon, ("qa",), token_id="tok_s"))
    path = tmp_path / "config"
    kubeconfig.write_atomic(path, kubeconfig.render(document))
    problems = checked(path, {expired: TokenState("expired"), revoked: TokenState("invalid"),
                              soon: TokenState("live", NOW + timedelta(days=3), "tok_s")})
    assert len(problems) == 3
    assert "has expired" in problems[0]
    assert "revoked or unknown" in problems[1]
    assert "tok_s" in problems[2] and "expires within 7 days" in problems[2]
    assert not any(s in " ".join(problems) for s in (expired, revoked, soon))


def test_check_refuses_garbage_clearly(tmp_path):
    path = tmp_path / "config"
    path.write_text("{{{")
    with pytest.raises(KubeconfigError, match="not valid YAML"):
        checked(path)
