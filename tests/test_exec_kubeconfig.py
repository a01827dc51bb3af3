"""The exec kubeconfig's shape, and merging it over a kubeconfig that held a secret."""

from tokensmith.kube import exec_kubeconfig, kubeconfig

PROD = kubeconfig.ClusterEntry("acme", "prod", "https://10.0.0.1:6443", "-----BEGIN CERTIFICATE-----\n")


def test_each_cluster_gets_an_exec_user_that_never_prompts():
    document = exec_kubeconfig.build_exec(
        [PROD, kubeconfig.ClusterEntry("acme", "staging", "https://10.0.0.2:6443", "pem")], "/opt/bin/tokensmith",
        {"TOKENSMITH_CONFIG": "/etc/me.toml"})
    assert [c["context"]["user"] for c in document["contexts"]] == ["tokensmith-acme-prod-exec",
                                                                     "tokensmith-acme-staging-exec"]
    exec_entry = document["users"][0]["user"]["exec"]
    assert exec_entry["command"] == "/opt/bin/tokensmith"
    assert exec_entry["args"] == ["kube-credential", "--cluster", "prod"]
    assert exec_entry["interactiveMode"] == "Never"
    assert exec_entry["env"] == [{"name": "TOKENSMITH_CONFIG", "value": "/etc/me.toml"}]


def test_the_plugin_answers_a_v1_exec_credential():
    assert exec_kubeconfig.exec_credential("tsm_x", "2030-01-01T00:00:00Z") == {
        "apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
        "status": {"token": "tsm_x", "expirationTimestamp": "2030-01-01T00:00:00Z"}}


def test_merging_the_exec_kubeconfig_over_a_token_kubeconfig_drops_the_old_secret():
    with_secret = kubeconfig.build([PROD], "tsm_secretsecret", "acme", "tok_1")
    merged = kubeconfig.merge(with_secret, exec_kubeconfig.build_exec([PROD], "tokensmith"))
    assert [u["name"] for u in merged["users"]] == ["tokensmith-acme-prod-exec"]
    assert "tsm_secretsecret" not in kubeconfig.render(merged)


def test_a_cached_credential_is_reused_until_five_minutes_before_it_expires(tmp_path):
    import json
    from datetime import UTC, datetime, timedelta

    from tokensmith.cli.exec_credential import _read_cached

    now = datetime(2030, 1, 1, tzinfo=UTC)
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"token": "tsm_x", "expires_at": (now + timedelta(minutes=6)).isoformat()}))
    assert _read_cached(path, now) == ("tsm_x", now + timedelta(minutes=6))
    path.write_text(json.dumps({"token": "tsm_x", "expires_at": (now + timedelta(minutes=4)).isoformat()}))
    assert _read_cached(path, now) is None
    path.write_text("not json")
    assert _read_cached(path, now) is None
