"""TLS on tokensmith itself: which CA a webhook kubeconfig embeds, and the https-only rule."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

import pytest
import yaml

from tests.pki import make_pki
from tokensmith.config import Settings
from tokensmith.db.database import Database
from tokensmith.errors import InvalidInput
from tokensmith.kube import tls

PKI = make_pki()


def test_the_ca_of_a_chain_file_is_its_last_certificate():
    assert tls.ca_from_chain(PKI.server_cert_pem + PKI.ca_pem) == PKI.ca_pem


def test_a_self_signed_certificate_is_its_own_ca():
    assert tls.ca_from_chain(PKI.ca_pem) == PKI.ca_pem


def test_a_lone_leaf_signed_by_someone_else_gives_no_ca():
    assert tls.ca_from_chain(PKI.server_cert_pem) is None


def test_a_file_without_a_certificate_is_a_clear_error():
    with pytest.raises(ValueError, match="holds no PEM certificate"):
        tls.ca_from_chain("not a certificate")


@pytest.mark.parametrize("url", ["http://tokensmith.example.com", "HTTP://10.0.0.5:8000"])
def test_an_http_webhook_url_is_refused_saying_why_and_what_to_do(url):
    with pytest.raises(InvalidInput) as refused:
        tls.require_https(url)
    assert "sends the webhook credential only over https" in refused.value.detail
    assert "tokensmith serve --tls-cert FILE --tls-key FILE" in refused.value.detail


def test_serving_files_need_both_halves(tmp_path):
    cert, _key = PKI.write_server_files(tmp_path)
    with pytest.raises(ValueError, match="needs both a certificate and a key"):
        tls.serving_files(cert, None)
    assert tls.serving_files(None, None) is None


def test_the_settings_read_the_tls_files_from_the_environment(tmp_path):
    settings = Settings.from_env({"TOKENSMITH_DATA_DIR": str(tmp_path), "TOKENSMITH_TLS_CERT": "/etc/t/chain.pem",
                                  "TOKENSMITH_TLS_KEY": "/etc/t/key.pem"})
    assert (settings.tls_cert, settings.tls_key) == (Path("/etc/t/chain.pem"), Path("/etc/t/key.pem"))


# --- the console, served over TLS ------------------------------------------------------------------


@pytest.fixture
def settings(tmp_path: Path, database: Database) -> Settings:
    """The app as ``serve --tls-cert chain.pem`` runs it: the console embeds the chain's CA."""
    chain = tmp_path / "chain.pem"
    chain.write_text(PKI.server_cert_pem + PKI.ca_pem)
    return Settings(data_dir=tmp_path / "data", database_url=database.url, tls_cert=chain,
                    tls_key=tmp_path / "key.pem")


def test_the_console_over_https_embeds_the_ca_of_tokensmiths_own_certificate(client, console, admin):
    client.base_url = "https://testserver"
    console(admin.user)
    page = client.get("/clusters").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)[1]
    client.post("/clusters", data={"csrf": csrf, "name": "prod", "server": "https://10.0.0.1:6443",
                                   "certificate_authority": PKI.ca_pem, "region": "eu-1"}, follow_redirects=False)
    reveal = client.get("/clusters").text
    kubeconfig = html.unescape(re.search(r'<textarea id="webhook-kubeconfig"[^>]*>(.*?)</textarea>', reveal, re.S)[1])
    embedded = yaml.safe_load(kubeconfig)["clusters"][0]["cluster"]["certificate-authority-data"]
    assert base64.b64decode(embedded).decode() == PKI.ca_pem
