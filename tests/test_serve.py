"""``tokensmith serve`` on a fresh data directory, and the README's curl quickstart."""

import json
import os
import shutil
import ssl
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.pki import make_pki
from tests.servers import ServerProcess, free_port, server_env
from tests.test_console_http import CSRF
from tokensmith.clock import FrozenClock


@pytest.fixture(scope="module")
def started(tmp_path_factory):
    """One server for the module (starting one costs seconds), and its first-start password file as it was
    before any test signed in (the first sign-in's password change removes it)."""
    data = tmp_path_factory.mktemp("serve") / "data"
    proc = ServerProcess(data, free_port(), server_env(data))
    proc.start()
    password_file = data / "initial-admin-password"
    yield proc, {"mode": stat.S_IMODE(os.stat(password_file).st_mode), "password": password_file.read_text().strip()}
    proc.stop()


@pytest.fixture(scope="module")
def server(started):
    return started[0]


def curl(*args: str) -> tuple[int, str]:
    result = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", *args], capture_output=True, text=True,
                            check=True, timeout=30)
    body, _, code = result.stdout.rpartition("\n")
    return int(code), body


def test_first_start_creates_data_dir_admin_and_password_file(started):
    server, first = started
    assert first["mode"] == 0o600
    assert stat.S_IMODE(os.stat(server.data_dir / "secret-key").st_mode) == 0o600
    assert (server.data_dir / "tokensmith.db").exists()


def test_the_initial_admin_password_is_not_written_to_a_non_interactive_server_log(started):
    # stdout is a file here, as under a service manager: only the file's path is shown.
    server, first = started
    assert first["password"] not in server.output()
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


# --- the README's quickstart, run as written ---------------------------------------------------

README = Path(__file__).resolve().parent.parent / "README.md"


def quickstart_script(url: str) -> str:
    """The README's curl quickstart block, verbatim except for the server's address."""
    text = README.read_text()
    section = text[text.index("## Quickstart with curl"):]
    block = section[section.index("```sh\n") + len("```sh\n"):section.index("\n```", section.index("```sh\n"))]
    assert "URL=http://127.0.0.1:8000\n" in block
    return block.replace("URL=http://127.0.0.1:8000\n", f"URL={url}\n")


def json_answers(text: str) -> list[dict]:
    decoder, answers, at = json.JSONDecoder(), [], 0
    while at < len(text):
        answer, at = decoder.raw_decode(text, at)
        answers.append(answer)
    return answers


def run_in(folder: Path, data_dir: Path, script: str) -> subprocess.CompletedProcess:
    (folder / ".tokensmith").symlink_to(data_dir)
    return subprocess.run(["bash", "-c", script], cwd=folder, capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_the_readme_quickstart_runs_as_written(own_server, tmp_path):
    server = own_server  # a first start, as the README's reader has: its initial password still unchanged
    result = run_in(tmp_path, server.data_dir, quickstart_script(server.url))
    assert result.returncode == 0, result.stderr
    answers = json_answers(result.stdout[:result.stdout.index("HTTP/1.1 401")])  # curl adds no newline
    assert answers[0]["token"]["name"] == "grafana"  # whoami with the new secret
    assert answers[1]["token_id"] == answers[0]["token"]["id"] and "unused_days" in answers[1]  # its usage
    assert answers[2]["name"] == "grafana"  # extended
    assert '"detail":"invalid token"' in result.stdout and not (tmp_path / "created.json").exists()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_the_readme_quickstart_says_clearly_when_the_password_is_wrong(server, tmp_path):
    fake = tmp_path / "fake-data"
    fake.mkdir()
    (fake / "initial-admin-password").write_text("not-the-password\n")
    (tmp_path / "here").mkdir()
    result = run_in(tmp_path / "here", fake, quickstart_script(server.url))
    assert "tokensmith: invalid username or password" in result.stderr
    assert "Traceback" not in result.stderr and "KeyError" not in result.stderr


def change_password_in_the_console(url: str, current: str, new: str) -> None:
    with httpx.Client(base_url=url, follow_redirects=True, timeout=30) as browser:
        csrf = CSRF.search(browser.get("/sign-in").text).group(1)
        page = browser.post("/sign-in", data={"csrf": csrf, "username": "admin", "password": current})
        assert page.url.path == "/account/password"
        csrf = CSRF.search(page.text).group(1)
        done = browser.post("/account/password", data={"csrf": csrf, "current": current, "new": new, "confirm": new})
        assert done.url.path == "/tokens", done.text


def test_the_initial_password_file_goes_once_the_admin_chose_a_password(own_server):
    password_file = own_server.data_dir / "initial-admin-password"
    change_password_in_the_console(own_server.url, password_file.read_text().strip(), "an-own-admin-password")
    assert not password_file.exists()
    own_server.stop()
    own_server.start()  # and a restart does not bring it back
    assert not password_file.exists()


def test_a_start_removes_an_initial_password_file_that_no_longer_works(tmp_path):
    from tokensmith.accounts.service import AccountService
    from tokensmith.bootstrap import prepare
    from tokensmith.config import Settings

    settings = Settings(data_dir=tmp_path / "data", database_url=f"sqlite:///{tmp_path / 'data' / 't.db'}")
    boot = prepare(settings)
    with boot.database.session() as session:  # changed without the console, e.g. directly in the database
        accounts = AccountService(session, FrozenClock())
        accounts.set_password(accounts.find_user("admin"), "changed-elsewhere-123")
    boot.database.dispose()
    assert (settings.data_dir / "initial-admin-password").exists()
    prepare(settings).database.dispose()
    assert not (settings.data_dir / "initial-admin-password").exists()


def test_serve_over_tls_answers_https_with_the_given_certificate(tmp_path):
    pki = make_pki()
    cert, key = pki.write_server_files(tmp_path)
    (tmp_path / "ca.pem").write_text(pki.ca_pem)
    data = tmp_path / "data"
    proc = ServerProcess(data, free_port(), server_env(data, TOKENSMITH_TLS_CERT=str(cert),
                                                       TOKENSMITH_TLS_KEY=str(key)), ca_file=str(tmp_path / "ca.pem"))
    try:
        proc.start()
        response = httpx.get(f"{proc.url}/healthz", verify=ssl.create_default_context(cafile=tmp_path / "ca.pem"))
        assert proc.url.startswith("https://") and response.status_code == 200
    finally:
        proc.stop()


def test_serve_with_a_certificate_but_no_key_says_what_is_missing(tmp_path):
    cert, _key = make_pki().write_server_files(tmp_path)
    result = subprocess.run([sys.executable, "-m", "tokensmith", "serve", "--port",
                             str(free_port()), "--tls-cert", str(cert)], capture_output=True, text=True, timeout=60,
                            env=server_env(tmp_path / "data"))
    assert result.returncode == 1
    assert "TLS needs both a certificate and a key: --tls-cert FILE --tls-key FILE" in result.stderr
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
    poller = select.poll()
    poller.register(primary, select.POLLIN)
    try:
        while b"must be changed" not in screen and time.monotonic() < deadline:
            # poll, not select: a test worker may hold more than 1024 file descriptors
            if poller.poll(1000):
                screen += os.read(primary, 4096)
    finally:
        process.terminate()
        process.wait(20)
        os.close(primary)
    password = (data / "initial-admin-password").read_text().strip()
    assert screen.decode(errors="replace").count(f"Initial admin password: {password}") == 1


def test_serve_prepares_the_data_directory_once_before_any_worker_starts(tmp_path, monkeypatch):
    """With --workers N each worker prepares too: done first, they find it done instead of racing to
    migrate and to create the first organization (one lost on its UNIQUE name and died at start)."""
    import uvicorn

    from tokensmith import server as serving
    from tokensmith.config import Settings
    from tokensmith.db.database import Database
    from tokensmith.db.models import User

    data = tmp_path / "data"
    for name, value in server_env(data).items():
        monkeypatch.setenv(name, value)
    seen: dict = {}

    def uvicorn_run(*_args, **kwargs) -> None:  # what the workers would find when they start
        database = Database(Settings.from_env().database_url)
        with database.session() as session:
            seen["users"] = [user.username for user in session.query(User)]
        database.dispose()
        seen["workers"] = kwargs["workers"]

    monkeypatch.setattr(uvicorn, "run", uvicorn_run)
    serving.run("127.0.0.1", free_port(), workers=2)
    assert seen == {"users": ["admin"], "workers": 2}
    assert (data / "initial-admin-password").is_file()
