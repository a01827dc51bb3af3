"""``tokensmith serve`` on a fresh data directory, and the README's curl quickstart."""

import json
import os
import shutil
import stat
import subprocess

import pytest

from tests.servers import ServerProcess, free_port, server_env


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server for the module: starting one costs seconds."""
    data = tmp_path_factory.mktemp("serve") / "data"
    proc = ServerProcess(data, free_port(), server_env(data))
    yield proc.start()
    proc.stop()


def curl(*args: str) -> tuple[int, str]:
    result = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", *args], capture_output=True, text=True,
                            check=True, timeout=30)
    body, _, code = result.stdout.rpartition("\n")
    return int(code), body


def test_first_start_creates_data_dir_admin_and_password_file(server):
    password_file = server.data_dir / "initial-admin-password"
    assert stat.S_IMODE(os.stat(password_file).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(server.data_dir / "secret-key").st_mode) == 0o600
    assert (server.data_dir / "tokensmith.db").exists()


def test_the_initial_admin_password_is_not_written_to_a_non_interactive_server_log(server):
    # stdout is a file here, as under a service manager: only the file's path is shown.
    password = (server.data_dir / "initial-admin-password").read_text().strip()
    assert password not in server.output()
    assert str(server.data_dir / "initial-admin-password") in server.output()


def test_the_data_directory_and_sqlite_files_are_owner_only(server):
    assert stat.S_IMODE(os.stat(server.data_dir).st_mode) == 0o700
    for name in ("tokensmith.db", "tokensmith.db-wal", "tokensmith.db-shm"):
        assert stat.S_IMODE(os.stat(server.data_dir / name).st_mode) == 0o600, name  # WAL: all three exist
    assert (server.data_dir / "tokensmith.db").exists()


@pytest.fixture
def own_server(tmp_path):
    proc = ServerProcess(tmp_path / "data", free_port(), server_env(tmp_path / "data"))
    yield proc.start()
    proc.stop()


def test_second_start_changes_nothing(own_server):
    server = own_server
    password = (server.data_dir / "initial-admin-password").read_text()
    key = (server.data_dir / "secret-key").read_text()
    server.stop()
    server.start()
    assert (server.data_dir / "initial-admin-password").read_text() == password
    assert (server.data_dir / "secret-key").read_text() == key
    assert server.output().count("Created organization 'default'") == 1


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_readme_quickstart_with_curl(server):
    initial = (server.data_dir / "initial-admin-password").read_text().strip()
    password = "quickstart-password-1"
    code, _ = curl("-X", "POST", f"{server.url}/v1/auth/password", "-H", "Content-Type: application/json",
                   "-d", json.dumps({"username": "admin", "password": initial, "new_password": password}))
    assert code == 204
    code, body = curl("-X", "POST", f"{server.url}/v1/auth/token", "-H", "Content-Type: application/json",
                      "-d", json.dumps({"username": "admin", "password": password, "name": "quickstart"}))
    assert code == 201
    admin_secret = json.loads(body)["secret"]
    code, body = curl("-X", "POST", f"{server.url}/v1/tokens", "-H", f"Authorization: Bearer {admin_secret}",
                      "-H", "Content-Type: application/json", "-d", '{"name": "grafana", "expiration": "7d"}')
    assert code == 201
    created = json.loads(body)
    secret = created["secret"]
    code, body = curl("-H", f"Authorization: Bearer {secret}", f"{server.url}/v1/whoami")
    assert code == 200
    assert json.loads(body)["token"]["name"] == "grafana"
    code, _ = curl("-X", "DELETE", "-H", f"Authorization: Bearer {admin_secret}",
                   f"{server.url}/v1/tokens/{created['token']['id']}")
    assert code == 204
    code, body = curl("-H", f"Authorization: Bearer {secret}", f"{server.url}/v1/whoami")
    assert code == 401
    assert json.loads(body)["detail"] == "invalid token"


def test_wrong_password_is_401_with_no_hint_which_part_was_wrong(server):
    code, body = curl("-X", "POST", f"{server.url}/v1/auth/token", "-H", "Content-Type: application/json",
                      "-d", '{"username": "admin", "password": "wrong-password"}')
    assert code == 401
    assert json.loads(body)["detail"] == "invalid username or password"
    code, body = curl("-X", "POST", f"{server.url}/v1/auth/token", "-H", "Content-Type: application/json",
                      "-d", '{"username": "nobody", "password": "wrong-password"}')
    assert code == 401
    assert json.loads(body)["detail"] == "invalid username or password"


def test_openapi_and_docs_are_served(server):
    code, body = curl(f"{server.url}/openapi.json")
    assert code == 200
    assert "/v1/tokens" in json.loads(body)["paths"]
    assert curl(f"{server.url}/docs")[0] == 200


def test_an_interactive_first_start_shows_the_initial_password_once_on_the_terminal(tmp_path):
    import pty
    import select
    import subprocess
    import sys
    import time

    from tests.servers import free_port

    data = tmp_path / "data"
    primary, secondary = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "tokensmith", "serve", "--port", str(free_port())],
                               env=server_env(data, TOKENSMITH_LOG_LEVEL="INFO"),
                               stdout=secondary, stderr=subprocess.DEVNULL)
    os.close(secondary)
    screen, deadline = b"", time.monotonic() + 90
    try:
        while b"must be changed" not in screen and time.monotonic() < deadline:
            if select.select([primary], [], [], 1)[0]:
                screen += os.read(primary, 4096)
    finally:
        process.terminate()
        process.wait(20)
        os.close(primary)
    password = (data / "initial-admin-password").read_text().strip()
    assert screen.decode(errors="replace").count(f"Initial admin password: {password}") == 1
