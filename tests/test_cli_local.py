"""CLI behaviour that needs no server: help, completion, scan, admin's data-directory check, serve's busy port."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from tokensmith import secrets


@pytest.fixture
def cli(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENSMITH_")}
    env.update(XDG_CONFIG_HOME=str(tmp_path / "config"), COLUMNS="80", TOKENSMITH_DATA_DIR=str(tmp_path / "data"))

    def run(*args: str, check: bool = True, **extra: str) -> subprocess.CompletedProcess:
        result = subprocess.run([sys.executable, "-m", "tokensmith", *args], env={**env, **extra},
                                capture_output=True, text=True, timeout=60, cwd=tmp_path)
        if check and result.returncode != 0:
            raise AssertionError(f"exit {result.returncode}: {result.stderr}")
        return result

    return run


def test_help_shows_no_bool_type_on_flags(cli):
    for command in (("token", "create"), ("token", "list"), ("login",), ("kubeconfig", "check")):
        assert "<bool>" not in cli(*command, "--help").stdout


def test_shell_completion_is_one_command(cli):
    # The shell named explicitly: Typer otherwise detects it from the process tree, which under a test
    # runner may be no shell at all.
    script = cli("--show-completion", "bash", _TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION="1").stdout
    assert "_TOKENSMITH_COMPLETE" in script
    assert "--install-completion" in cli("--help").stdout


def test_scan_says_how_many_files_were_scanned_and_exits_1_on_a_find(cli, tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    for n in range(3):
        (tree / f"f{n}.txt").write_text("x\n")
    (tree / "f1.txt").write_text(secrets.generate() + "\n")
    result = cli("scan", str(tree), check=False)
    assert result.returncode == 1
    assert "1 secret found in 3 files scanned" in result.stderr


def test_scan_json_lists_findings_masked(cli, tmp_path):
    leak = secrets.generate()
    (tmp_path / "app.env").write_text(f"TOKEN={leak}\n")
    result = cli("scan", str(tmp_path / "app.env"), "--json", check=False)
    assert result.returncode == 1
    assert json.loads(result.stdout) == [{"path": str(tmp_path / "app.env"), "line": 1, "secret": secrets.mask(leak)}]


def test_scan_of_a_large_tree_is_quiet_when_not_a_terminal(cli, tmp_path):
    tree = tmp_path / "big"
    tree.mkdir()
    for n in range(600):
        (tree / f"f{n}.txt").write_text("x\n")
    result = cli("scan", str(tree))
    assert result.stderr == "0 secrets found in 600 files scanned\n"


def test_admin_commands_refuse_to_create_a_database_and_name_the_directory(cli, tmp_path):
    nowhere = tmp_path / "elsewhere" / ".tokensmith"
    result = cli("admin", "create-user", "ghost", check=False, TOKENSMITH_DATA_DIR=str(nowhere))
    assert result.returncode == 1
    assert f"no tokensmith database or secret key in {nowhere}" in result.stderr
    assert "tokensmith admin --init" in result.stderr
    assert not nowhere.exists()


def test_admin_init_creates_the_data_directory_on_purpose_and_names_it(cli, tmp_path):
    fresh = tmp_path / "fresh"
    result = cli("admin", "--init", "create-user", "first", TOKENSMITH_DATA_DIR=str(fresh))
    assert (fresh / "tokensmith.db").exists()
    assert f"(data directory {fresh})" in result.stderr
    again = cli("admin", "create-token", "--user", "first", "--name", "t", TOKENSMITH_DATA_DIR=str(fresh))
    assert secrets.is_well_formed(again.stdout.strip()) and f"(data directory {fresh})" in again.stderr


def test_serve_on_a_busy_port_says_so_and_exits_4_before_doing_anything(cli, tmp_path):
    data = tmp_path / "unused"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = cli("serve", "--port", str(port), check=False, TOKENSMITH_DATA_DIR=str(data))
    assert result.returncode == 4
    assert result.stderr.strip() == f"error: 127.0.0.1:{port} is already in use (another tokensmith?); stop it " \
                                    "or pick another --port"
    assert not data.exists()  # no database, no webhook pass: nothing ran



def test_the_client_commands_start_without_loading_the_database_layer():
    """``tokensmith token ...`` and the kubectl exec plugin (run by kubectl on every call) only speak HTTP: the
    database layer (SQLAlchemy, Alembic, the use cases) is imported by the commands that act on it, not by all."""
    probe = ("import sys, tokensmith.cli.main; "
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'sqlalchemy', 'alembic', 'fastapi', 'argon2'}), "
             "sorted(m for m in sys.modules if m.startswith(('tokensmith.usecases', 'tokensmith.db'))))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[] []"


def test_kubectls_exec_plugin_answers_from_its_cache_without_loading_http_rich_or_yaml(tmp_path):
    """kubectl runs ``tokensmith kube-credential`` on every call; with a cached credential it only reads two
    files and prints JSON, so it loads neither the HTTP client, rich nor YAML (~0.25 s of CPU a call)."""
    from datetime import UTC, datetime, timedelta

    config = tmp_path / "config" / "tokensmith" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('url = "http://127.0.0.1:9"\ntoken = "tsm_login"\n')  # port 9: nothing may be asked
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENSMITH_")}
    env.update(XDG_CONFIG_HOME=str(tmp_path / "config"), XDG_CACHE_HOME=str(tmp_path / "cache"))
    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    seed = ("import sys, datetime; from tokensmith.cli.exec_credential import _cache_file, _write_cached; "
            f"_write_cached(_cache_file('http://127.0.0.1:9', 'prod', 'tsm_login'), 'tsm_cached', "
            f"datetime.datetime.fromisoformat({expires.isoformat()!r}))")
    subprocess.run([sys.executable, "-c", seed], env=env, check=True)
    probe = ("import sys\nfrom tokensmith.cli.main import main\nsys.argv = ['tokensmith', 'kube-credential', "
             "'--cluster', 'prod']\ntry:\n    main()\nfinally:\n    print(sorted({m.split('.')[0] for m, module in "
             "sys.modules.items() if module is not None} & {'httpx', 'rich', 'yaml', 'sqlalchemy'}), file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["status"] == {
        "token": "tsm_cached", "expirationTimestamp": (expires - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")}
    assert result.stderr.strip() == "[]"
