"""``tokensmith login --web`` end to end: the real CLI polls a real ``tokensmith serve`` while a person
approves (or denies) the code in a real headless Chromium; an expired code logs nobody in.

Same browser set-up and screenshots folder as test_console_browser.py; this module runs its own server
with a short device-code lifetime (TOKENSMITH_DEVICE_CODE_LIFETIME), and for the expiry test a second one
on the same data directory whose codes expire within seconds, so expiry is seen in real time.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from tests import test_console_browser as shared
from tests.conftest import require
from tests.pki import make_pki
from tests.servers import ServerProcess, free_port, server_env, wait_for_http

pytestmark = pytest.mark.browser

LIFETIME = 45  # seconds a code waits for approval on this module's server
SHORT_LIFETIME = 2  # seconds a code waits on the short-lived server (the CLI polls every 5 s)
TOKENSMITH = str(Path(sys.executable).parent / "tokensmith")
PROMPT = re.compile(r"open (\S+) and enter the code ([A-Z]{4}-[A-Z]{4})")
COMPLETE = re.compile(r"\(or open (\S+)\)")

admin_password = shared.admin_password  # resolved against this module's server
admin_context = shared.admin_context
shot = shared.shot


def _started(proc: ServerProcess) -> ServerProcess:
    try:
        proc.start()
    except TimeoutError:  # a heavily loaded machine: give a still-running server more time
        wait_for_http(proc.ready_url, timeout=120, process=proc.process)
    return proc


@pytest.fixture(scope="module")
def server(tmp_path_factory, browser) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("device-login") / "data"
    proc = _started(ServerProcess(data, free_port(), server_env(data, TOKENSMITH_DEVICE_CODE_LIFETIME=str(LIFETIME))))
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def short_lived_server(server) -> Iterator[ServerProcess]:
    """A second server on the same data directory (database, secret key, so the admin's console session too)
    whose codes expire after SHORT_LIFETIME: the expiry test waits that long, not the main server's LIFETIME."""
    proc = _started(ServerProcess(server.data_dir, free_port(),
                                  server_env(server.data_dir, TOKENSMITH_DEVICE_CODE_LIFETIME=str(SHORT_LIFETIME))))
    yield proc
    proc.stop()


@pytest.fixture
def page(admin_context):
    page = admin_context.new_page()
    yield page
    page.close()


@dataclass
class WebLogin:
    """A running ``tokensmith login --web`` and what it printed."""

    process: subprocess.Popen[str]
    config: Path
    verification_uri: str
    user_code: str
    complete_uri: str

    def finish(self, timeout: float = LIFETIME + 30) -> tuple[int, str]:
        _out, err = self.process.communicate(timeout=timeout)
        return self.process.returncode, err


@pytest.fixture
def web_login(server, tmp_path) -> Iterator:
    require(os.access(TOKENSMITH, os.X_OK), f"the tokensmith CLI at {TOKENSMITH}")
    started: list[subprocess.Popen[str]] = []

    def start(against: ServerProcess = server) -> WebLogin:
        config = tmp_path / f"cli-{len(started)}" / "config.toml"
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENSMITH_")}
        env["TOKENSMITH_CONFIG"] = str(config)
        process = subprocess.Popen([TOKENSMITH, "login", "--web", "--url", against.url], env=env, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        started.append(process)
        assert process.stderr is not None
        first, second = process.stderr.readline(), process.stderr.readline()
        prompt, complete = PROMPT.search(first), COMPLETE.search(second)
        assert prompt and complete, first + second
        return WebLogin(process, config, prompt.group(1), prompt.group(2), complete.group(1))

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_login_web_approved_in_the_browser_logs_the_cli_in(web_login, page, server):
    login = web_login()
    assert login.verification_uri == f"{server.url}/device"
    page.goto("/device")
    page.get_by_label("Code").fill(login.user_code.lower().replace("-", ""))
    page.get_by_role("button", name="Continue").click()
    assert page.locator("#device-code").inner_text() == login.user_code
    assert page.locator("#device-name").inner_text().startswith("tokensmith CLI on ")
    assert page.locator("#device-ip").inner_text() == "127.0.0.1"
    assert page.locator("#device-scopes").inner_text() == "All of yours"
    shot(page, "device-confirm-desktop")
    page.get_by_role("button", name="Approve").click()
    assert page.locator("#device-approved").is_visible()
    code, err = login.finish()
    assert code == 0, err
    secret = tomllib.loads(login.config.read_text())["token"]
    me = httpx.get(f"{server.url}/v1/whoami", headers={"Authorization": f"Bearer {secret}"})
    assert me.status_code == 200 and me.json()["user"]["username"] == "admin"
    assert oct(login.config.stat().st_mode & 0o777) == "0o600"


def test_login_web_denied_in_the_browser_logs_nobody_in(web_login, page):
    login = web_login()
    page.goto(login.complete_uri)
    page.get_by_role("button", name="Deny").click()
    assert page.locator("#device-denied").is_visible()
    code, err = login.finish()
    assert code == 3
    assert "denied" in err
    assert not login.config.exists()


def test_login_web_with_an_expired_code_logs_nobody_in_and_the_code_cannot_be_approved(web_login, page,
                                                                                     short_lived_server):
    login = web_login(short_lived_server)
    code, err = login.finish()
    assert code == 3
    assert "expired" in err
    assert not login.config.exists()
    page.goto(login.complete_uri)
    assert page.locator("#device-error").is_visible()
    assert page.get_by_role("button", name="Approve").count() == 0
    shot(page, "device-expired-desktop")


def test_the_console_downloads_a_kubeconfig_without_a_secret(page, server, admin_password, tmp_path):
    signed = httpx.post(f"{server.url}/v1/auth/token", json={"username": "admin", "password": admin_password,
                                                             "name": "setup"})
    headers = {"Authorization": f"Bearer {signed.json()['secret']}"}
    created = httpx.post(f"{server.url}/v1/clusters", headers=headers, json={
        "name": "edge", "server": "https://10.0.0.7:6443", "certificate_authority": make_pki().ca_pem,
        "region": "eu-1"})
    assert created.status_code == 201, created.text
    page.goto("/tokens")
    page.locator("#create-token").click()
    dialog = page.locator("#create-dialog")
    dialog.get_by_label("No secret: via the tokensmith CLI").check()
    dialog.get_by_role("checkbox", name="edge").check()  # (its access-level select is labelled "... on edge" too)
    shot(page, "create-exec-kubeconfig-desktop")
    with page.expect_download() as download:
        dialog.get_by_role("button", name="Create token").click()
    path = tmp_path / download.value.suggested_filename
    download.value.save_as(path)
    assert download.value.suggested_filename == "kubeconfig-default-exec.yaml"
    text = path.read_text()
    assert "tsm_" not in text and "token:" not in text
    assert yaml.safe_load(text)["users"][0]["user"]["exec"]["args"] == ["kube-credential", "--cluster", "edge"]
