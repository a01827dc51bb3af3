"""The CLI as complete as the console (issue 14), driven against a real ``tokensmith serve``.

Each test runs the ``tokensmith`` command in a subprocess, as a user would, with its own config
directory; one server per module (and per database) keeps the run short.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.conftest import require
from tests.pki import CA_PEM
from tests.servers import ServerProcess, admin_password, free_port, server_env
from tokensmith import secrets


# One xdist group per database, not one for the module: each has its own server anyway, and the module is
# the suite's longest, so the two halves may run on both workers at once.
@pytest.fixture(scope="module", params=[
    pytest.param("sqlite", marks=pytest.mark.xdist_group("cli-parity-sqlite")),
    pytest.param("postgresql", marks=[pytest.mark.postgres, pytest.mark.xdist_group("cli-parity-postgresql")]),
])
def server(request, tmp_path_factory):
    data = tmp_path_factory.mktemp("serve") / "data"
    database_url = request.getfixturevalue("own_postgres") if request.param == "postgresql" else None
    proc = ServerProcess(data, free_port(), server_env(data, database_url))
    yield proc.start()
    proc.stop()


@pytest.fixture
def cli(tmp_path, server):
    env = {**server.env, "XDG_CONFIG_HOME": str(tmp_path / "config"), "COLUMNS": "80",
           "KUBECONFIG": str(tmp_path / "kube" / "config")}

    def run(*args: str, input: str | None = None, check: bool = True, **extra: str) -> subprocess.CompletedProcess:
        result = subprocess.run([sys.executable, "-m", "tokensmith", *args], env={**env, **extra}, input=input,
                                capture_output=True, text=True, timeout=60, cwd=tmp_path)
        if check and result.returncode != 0:
            raise AssertionError(f"exit {result.returncode}: {result.stderr}")
        return result

    run.config_file = tmp_path / "config" / "tokensmith" / "config.toml"
    run.env = env
    return run


def _password(server) -> str:
    return admin_password(server.url, server.data_dir)


def _own_password(server, username: str, first: str) -> str:
    """A new user's own password: a first password mints no token until it is changed (403)."""
    own = first + "-own"
    changed = httpx.post(f"{server.url}/v1/auth/password", timeout=60,
                         json={"username": username, "password": first, "new_password": own})
    assert changed.status_code == 204, changed.text
    return own


@pytest.fixture
def logged_in(cli, server):
    cli("login", "--url", server.url, "--username", "admin", input=_password(server) + "\n")
    return cli


def _stored(cli) -> dict[str, str]:
    return tomllib.loads(cli.config_file.read_text())


def _unique(prefix: str) -> str:
    return f"{prefix}-{os.urandom(3).hex()}"


@pytest.fixture
def cluster(logged_in, tmp_path):
    """A cluster added with `tokensmith cluster create`."""
    name = _unique("prod")
    ca = tmp_path / "ca.pem"
    ca.write_text(CA_PEM)
    logged_in("cluster", "create", name, "--server", "https://127.0.0.1:6443", "--ca-file", str(ca),
              "--region", "eu")
    return name


# --- token create --------------------------------------------------------------------------------


def test_token_create_prints_the_secret_alone_and_the_expiry_on_stderr(logged_in):
    result = logged_in("token", "create", "--name", _unique("ci"), "--expires-in", "30d")
    assert secrets.is_well_formed(result.stdout.strip()) and result.stdout.count("\n") == 1
    expected = (datetime.now(UTC) + timedelta(days=30)).strftime("%Y-%m-%d")
    assert f"expires {expected}" in result.stderr
    assert "(in 30 days)" in result.stderr


def test_token_create_with_a_date_expires_that_day_at_midnight_utc(logged_in):
    result = logged_in("token", "create", "--name", _unique("dated"), "--expires-at", "2027-01-31", "--json")
    assert json.loads(result.stdout)["token"]["expires_at"].startswith("2027-01-31T00:00:00")


def test_expires_in_1m_is_one_minute_and_1M_is_refused_with_the_hint(logged_in):
    created = json.loads(logged_in("token", "create", "--name", _unique("short"), "--expires-in", "1m",
                                   "--json").stdout)
    lifetime = datetime.fromisoformat(created["token"]["expires_at"]) - datetime.fromisoformat(
        created["token"]["created_at"])
    assert lifetime == timedelta(minutes=1)
    refused = logged_in("token", "create", "--name", "x", "--expires-in", "1M", check=False)
    assert refused.returncode == 2
    assert "use 30d or 4w, not 1M/1mo" in refused.stderr


def test_token_create_grants_a_cluster_and_writes_a_kubeconfig_kubectl_reads(logged_in, cluster, tmp_path):
    require(shutil.which("kubectl") is not None, "kubectl is needed for the kubeconfig test")
    target = tmp_path / "prod.yaml"
    result = logged_in("token", "create", "--name", _unique("deploy"), "--cluster", cluster, "--kubeconfig",
                       "-o", str(target))
    assert result.stdout == ""  # the secret is only in the file
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    token = subprocess.run(
        ["kubectl", "--kubeconfig", str(target), "config", "view", "--raw", "-o", "jsonpath={.users[0].user.token}"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "KUBECACHEDIR": str(tmp_path / "cache")},
        check=True).stdout
    assert secrets.is_well_formed(token)
    me = subprocess.run([sys.executable, "-m", "tokensmith", "whoami", "--json"], capture_output=True, text=True,
                        env={**logged_in.env, "TOKENSMITH_TOKEN": token}, timeout=60, check=True).stdout
    assert [c["name"] for c in json.loads(me)["token"]["clusters"]] == [cluster]


def test_token_create_merge_adds_the_cluster_to_the_kubeconfig(logged_in, cluster, tmp_path):
    logged_in("token", "create", "--name", _unique("merged"), "--cluster", cluster, "--kubeconfig", "--merge")
    merged = (tmp_path / "kube" / "config").read_text()
    assert f"tokensmith-default-{cluster}" in merged


def test_token_create_passes_a_cluster_level_through_to_the_api(logged_in, cluster):
    # The API form is NAME=LEVEL: the token grants the cluster at that access level.
    created = json.loads(logged_in("token", "create", "--name", _unique("viewer"), "--cluster", f"{cluster}=view",
                                   "--json").stdout)
    assert [(c["name"], c["level"]) for c in created["token"]["clusters"]] == [(cluster, "view")]


# --- token list / show / delete / rotate -----------------------------------------------------------


def test_token_list_shows_full_ids_note_and_marks_the_cli_token_in_80_columns(logged_in):
    created = json.loads(logged_in("token", "create", "--name", _unique("grafana"), "--note", "dash",
                                   "--json").stdout)
    listing = logged_in("token", "list").stdout
    assert created["token"]["id"] in listing
    assert "dash" in listing
    assert f"{_stored(logged_in)['token_id']} *" in listing
    assert max(len(line) for line in listing.splitlines()) <= 80
    assert created["secret"] not in listing


def test_token_list_wide_shows_hints(logged_in):
    secret = logged_in("token", "create", "--name", _unique("wide")).stdout.strip()
    assert f"…{secret[-4:]}" in logged_in("token", "list", "--wide").stdout


def test_token_list_json_is_parseable(logged_in):
    name = _unique("json")
    logged_in("token", "create", "--name", name)
    assert name in [t["name"] for t in json.loads(logged_in("token", "list", "--json").stdout)]


def test_token_delete_by_name(logged_in):
    name = _unique("temp")
    created = json.loads(logged_in("token", "create", "--name", name, "--json").stdout)
    assert "deleted " + created["token"]["id"] in logged_in("token", "delete", name).stdout
    assert created["token"]["id"] not in logged_in("token", "list", "--json").stdout


def test_an_ambiguous_name_is_refused_listing_the_ids(logged_in):
    name = _unique("twin")
    ids = [json.loads(logged_in("token", "create", "--name", name, "--json").stdout)["token"]["id"] for _ in (1, 2)]
    result = logged_in("token", "delete", name, check=False)
    assert result.returncode == 2
    assert all(token_id in result.stderr for token_id in ids)
    assert all(token_id in logged_in("token", "list", "--json").stdout for token_id in ids)


def test_token_show_by_name_as_json(logged_in):
    name = _unique("shown")
    logged_in("token", "create", "--name", name, "--note", "for show")
    shown = json.loads(logged_in("token", "show", name, "--json").stdout)
    assert (shown["name"], shown["note"]) == (name, "for show")


def test_token_rotate_by_name_sets_a_new_expiry(logged_in):
    name = _unique("rotated")
    old = logged_in("token", "create", "--name", name, "--expires-in", "7d").stdout.strip()
    result = logged_in("token", "rotate", name, "--expires-at", "2027-06-30")
    assert secrets.is_well_formed(result.stdout.strip()) and result.stdout.strip() != old
    assert "expires 2027-06-30 00:00 UTC" in result.stderr


def test_an_unknown_token_name_is_one_line_exit_1(logged_in):
    result = logged_in("token", "show", "no-such-token", check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == \
        "error: token 'no-such-token' not found (no id or name matches); see: tokensmith token list"


# --- login -------------------------------------------------------------------------------------


def test_login_again_replaces_the_cli_token_instead_of_adding_one(logged_in, server):
    first = _stored(logged_in)["token_id"]
    logged_in("login", "--username", "admin", input=_password(server) + "\n")  # the last URL is the default
    second = _stored(logged_in)["token_id"]
    ids = [t["id"] for t in json.loads(logged_in("token", "list", "--json").stdout)]
    assert second != first and second in ids and first not in ids


def test_login_as_another_user_revokes_the_previous_login_token(logged_in, server, tmp_path):
    first = _stored(logged_in)["token_id"]
    name = _unique("next")
    password = _own_password(server, name, logged_in("user", "create", name).stdout.strip())
    assert "replaced " + first in logged_in("login", "--username", name, input=password + "\n").stdout
    admin = dict(XDG_CONFIG_HOME=str(tmp_path / "admin"))
    logged_in("login", "--url", server.url, "--username", "admin", input=_password(server) + "\n", **admin)
    assert first not in logged_in("token", "list", "--all", "--json", **admin).stdout


def test_login_with_a_first_password_asks_for_a_new_one_then_logs_in(logged_in, cli, server):
    name = _unique("newcomer")
    first = logged_in("user", "create", name).stdout.strip()
    result = cli("login", "--url", server.url, "--username", name, input=f"{first}\n{first}-mine\n")
    assert f"logged in as {name}" in result.stdout and "password changed" in result.stderr
    again = cli("login", "--url", server.url, "--username", name, input=f"{first}-mine\n")
    assert f"logged in as {name}" in again.stdout


def test_login_defaults_to_tokensmith_url(cli, server):
    cli("login", "--username", "admin", input=_password(server) + "\n", TOKENSMITH_URL=server.url)
    assert _stored(cli)["url"] == server.url


def test_login_to_a_url_ending_in_v1_says_to_use_the_root_before_asking_a_password(cli, server):
    result = cli("login", "--url", f"{server.url}/v1", check=False)
    assert result.returncode == 2
    assert f"give the server's root URL instead: {server.url}" in result.stderr
    assert "Password" not in result.stdout + result.stderr


def test_login_to_nothing_says_nothing_answers(cli):
    result = cli("login", "--url", f"http://127.0.0.1:{free_port()}", "--username", "admin", input="x\n",
                 check=False)
    assert result.returncode == 1
    assert "nothing answers there (connection refused)" in result.stderr
    assert "ConnectError" not in result.stderr


def test_login_to_a_server_that_is_not_tokensmith_says_so(cli, tmp_path):
    (tmp_path / "index.html").write_text("hello")
    other = free_port()
    web = subprocess.Popen([sys.executable, "-m", "http.server", str(other), "--bind", "127.0.0.1"], cwd=tmp_path,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        from tests.servers import wait_for_http

        wait_for_http(f"http://127.0.0.1:{other}/", timeout=30)
        result = cli("login", "--url", f"http://127.0.0.1:{other}", check=False)
    finally:
        web.terminate()
        web.wait(10)
    assert result.returncode == 2
    assert "answers but is not a tokensmith server" in result.stderr


def test_login_without_a_scheme_is_refused_clearly(cli):
    result = cli("login", "--url", "127.0.0.1:8000", check=False)
    assert result.returncode == 2
    assert "is not an http:// or https:// URL" in result.stderr


def test_an_expired_cli_login_says_to_log_in_again(logged_in, server):
    from sqlalchemy import select

    from tokensmith.db.database import Database
    from tokensmith.db.models import Token

    database = Database(server.env.get("TOKENSMITH_DATABASE_URL") or f"sqlite:///{server.data_dir / 'tokensmith.db'}")
    with database.session() as session:  # a real server's clock cannot be moved; the token's expiry can
        token = session.scalar(select(Token).where(Token.public_id == _stored(logged_in)["token_id"]))
        token.expires_at = datetime.now(UTC) - timedelta(hours=1)
    database.dispose()
    result = logged_in("token", "list", check=False)
    assert result.returncode == 3
    assert "token expired" in result.stderr and "run 'tokensmith login' again" in result.stderr


# --- clusters, VPCs, users -----------------------------------------------------------------------


def test_cluster_create_show_set_audience_delete(logged_in, cluster):
    shown = json.loads(logged_in("cluster", "show", cluster, "--json").stdout)
    assert shown["server"] == "https://127.0.0.1:6443"
    logged_in("cluster", "set-audience", cluster, "https://kubernetes.default.svc")
    assert json.loads(logged_in("cluster", "show", cluster, "--json").stdout)["audience"] == \
        "https://kubernetes.default.svc"
    logged_in("cluster", "delete", cluster)
    assert cluster not in [c["name"] for c in json.loads(logged_in("cluster", "list", "--json").stdout)]


def test_vpc_create_list_delete(logged_in):
    name = _unique("vpc")
    created = json.loads(logged_in("vpc", "create", name, "--region", "eu", "--cidr", "10.1.0.0/16", "--json").stdout)
    assert name in [v["name"] for v in json.loads(logged_in("vpc", "list", "--json").stdout)]
    logged_in("vpc", "delete", created["id"])
    assert name not in logged_in("vpc", "list").stdout


def test_user_create_prints_a_first_password_that_signs_in(logged_in, server, tmp_path):
    name = _unique("dev")
    first = logged_in("user", "create", name).stdout.strip()
    listed = {u["username"]: u for u in json.loads(logged_in("user", "list", "--json").stdout)}
    assert listed[name]["must_change_password"] and not listed[name]["is_admin"]
    password = _own_password(server, name, first)  # the first password's one use
    other = logged_in("login", "--url", server.url, "--username", name, input=password + "\n",
                      XDG_CONFIG_HOME=str(tmp_path / "other"))
    assert f"logged in as {name}" in other.stdout


def test_user_disable_enable_and_reset_password(logged_in):
    name = _unique("ops")
    logged_in("user", "create", name)
    logged_in("user", "disable", name)
    assert {u["username"]: u for u in json.loads(logged_in("user", "list", "--json").stdout)}[name]["disabled"]
    logged_in("user", "enable", name)
    new = logged_in("user", "reset-password", name).stdout.strip()
    assert len(new) >= 8 and "\n" not in new


def test_an_admin_cannot_disable_themselves(logged_in):
    result = logged_in("user", "disable", "admin", check=False)
    assert result.returncode == 1
    assert "you cannot disable your own account" in result.stderr


def test_members_cannot_manage_users(logged_in, server, tmp_path):
    name = _unique("member")
    password = _own_password(server, name, logged_in("user", "create", name).stdout.strip())
    member = dict(XDG_CONFIG_HOME=str(tmp_path / "member"))
    logged_in("login", "--url", server.url, "--username", name, input=password + "\n", **member)
    result = logged_in("user", "create", _unique("nope"), check=False, **member)
    assert result.returncode == 3 and "'org:admin'" in result.stderr


# --- kubeconfig check ------------------------------------------------------------------------------


def test_kubeconfig_check_flags_a_token_that_does_not_grant_its_cluster(logged_in, cluster, tmp_path):
    good = tmp_path / "good.yaml"
    logged_in("token", "create", "--name", _unique("ok"), "--cluster", cluster, "--kubeconfig", "-o", str(good))
    assert "no problems found" in logged_in("kubeconfig", "check", str(good)).stdout
    # The same kubeconfig, but holding a token that grants no cluster.
    other = logged_in("token", "create", "--name", _unique("nogrant")).stdout.strip()
    bad = tmp_path / "bad.yaml"
    document = good.read_text()
    bad.write_text(document.replace(_token_in(document), other))
    bad.chmod(0o600)
    result = logged_in("kubeconfig", "check", str(bad), check=False)
    assert result.returncode == 1
    assert f"does not grant cluster 'tokensmith-default-{cluster}'" in result.stdout
    as_json = logged_in("kubeconfig", "check", str(bad), "--json", check=False)
    assert as_json.returncode == 1
    [problem] = json.loads(as_json.stdout)["problems"]
    assert "does not grant cluster" in problem and other not in as_json.stdout


def _token_in(kubeconfig_text: str) -> str:
    import yaml

    return yaml.safe_load(kubeconfig_text)["users"][0]["user"]["token"]


def test_kubeconfig_check_offline_says_it_could_not_check(logged_in, cluster, tmp_path):
    path = tmp_path / "k.yaml"
    logged_in("token", "create", "--name", _unique("off"), "--cluster", cluster, "--kubeconfig", "-o", str(path))
    result = logged_in("kubeconfig", "check", str(path), TOKENSMITH_URL=f"http://127.0.0.1:{free_port()}")
    assert "could not check 1 tokensmith token(s)" in result.stderr
    assert "(tokens not checked)" in result.stdout


# --- empty lists ---------------------------------------------------------------------------------------


def test_empty_lists_print_a_friendly_line_not_an_empty_box(logged_in, cluster):
    result = logged_in("cluster", "credentials", "list", cluster)
    assert result.stdout.startswith(f"No webhook credentials for {cluster}.")
    assert "━" not in result.stdout and "─" not in result.stdout


# --- admin backup (the SQLite database of the running server) ---------------------------------------


def test_admin_backup_names_what_it_copied_and_is_quiet_when_not_a_terminal(cli, server, tmp_path):
    if server.env.get("TOKENSMITH_DATABASE_URL"):
        pytest.skip("backup copies the SQLite database; PostgreSQL uses pg_dump")
    result = cli("admin", "backup", str(tmp_path / "copy.db"))
    assert result.stderr == f"backed up {server.data_dir / 'tokensmith.db'} to {tmp_path / 'copy.db'}\n"


def test_admin_backup_shows_progress_on_a_terminal(cli, server, tmp_path):
    if server.env.get("TOKENSMITH_DATABASE_URL"):
        pytest.skip("backup copies the SQLite database; PostgreSQL uses pg_dump")
    result = cli("admin", "backup", str(tmp_path / "copy.db"), FORCE_COLOR="1")  # rich: stderr is a terminal
    assert "backing up" in result.stderr
