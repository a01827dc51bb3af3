"""`kubeconfig check` on grants and time left (kube.kubeconfig.check with the answers tokensmith gives)."""

from datetime import UTC, datetime, timedelta

from tests.pki import CA_PEM
from tokensmith import secrets
from tokensmith.kube import kubeconfig
from tokensmith.kube.kubeconfig import ClusterEntry, TokenState

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def _write(tmp_path, secret, clusters=("prod",)):
    entries = [ClusterEntry("acme", name, f"https://10.0.0.{i + 1}:6443", CA_PEM) for i, name in enumerate(clusters)]
    path = tmp_path / "config"
    kubeconfig.write_atomic(path, kubeconfig.render(kubeconfig.build(entries, secret, "acme", "tok_a")))
    return path


def _live(grants, expires=NOW + timedelta(days=30)):
    return TokenState("live", expires, "tok_a", frozenset(grants))


def test_a_token_granting_its_cluster_is_fine(tmp_path):
    secret = secrets.generate()
    path = _write(tmp_path, secret)
    assert kubeconfig.check(path, lambda s: _live({"tokensmith-acme-prod", "prod"}), NOW) == []


def test_a_token_that_does_not_grant_its_contexts_cluster_is_a_problem(tmp_path):
    secret = secrets.generate()
    path = _write(tmp_path, secret, ("prod", "staging"))
    [problem] = kubeconfig.check(path, lambda s: _live({"tokensmith-acme-prod", "prod"}), NOW)
    assert "does not grant cluster 'tokensmith-acme-staging'" in problem
    assert secret not in problem


def test_a_hand_named_cluster_is_matched_by_its_server(tmp_path):
    secret = secrets.generate()
    path = _write(tmp_path, secret)
    assert kubeconfig.check(path, lambda s: _live({"https://10.0.0.1:6443"}), NOW) == []


def test_grants_are_not_judged_when_unknown(tmp_path):
    secret = secrets.generate()
    path = _write(tmp_path, secret)
    assert kubeconfig.check(path, lambda s: TokenState("live", NOW + timedelta(days=30), "tok_a"), NOW) == []


def test_23_hours_left_says_hours_not_zero_days(tmp_path):
    secret = secrets.generate()
    path = _write(tmp_path, secret)
    [problem] = kubeconfig.check(path, lambda s: _live({"tokensmith-acme-prod"}, NOW + timedelta(hours=23)), NOW)
    assert "23 hours left" in problem and "0 d" not in problem
