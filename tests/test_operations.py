"""Operator endpoints: health, readiness, metrics, security headers, shutdown hooks, logs, backup."""

import json
import logging
import sqlite3
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient

from tests.conftest import SECRET_KEY
from tokensmith import logs, metrics, secrets
from tokensmith.api.app import create_app
from tokensmith.api.middleware import API_CSP, CONSOLE_CSP
from tokensmith.api.operations import add_shutdown_hook
from tokensmith.config import Settings
from tokensmith.db.database import Database
from tokensmith.db.migrate import upgrade

# --- health and readiness ----------------------------------------------------------------------


def test_healthz_answers_without_credentials(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_readyz_is_ready_on_a_migrated_database(client):
    response = client.get("/readyz")
    assert response.status_code == 200 and response.json() == {"status": "ready"}


def test_readyz_is_503_when_migrations_are_behind(tmp_path, clock):
    database = Database(f"sqlite:///{tmp_path / 'old.db'}")
    upgrade(database.engine, "0002")
    app = create_app(Settings(tmp_path, database.url), database, SECRET_KEY, clock)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert "tokensmith db upgrade" in response.json()["detail"]
    database.dispose()


def test_readyz_is_503_when_the_database_is_unreachable(tmp_path, clock):
    database = Database("postgresql+psycopg://nobody@127.0.0.1:1/none")
    app = create_app(Settings(tmp_path, database.url), database, SECRET_KEY, clock)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["detail"] == "the database is unreachable"


# --- security headers --------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/healthz", "/v1/whoami", "/openapi.json", "/no-such-page"])
def test_every_response_carries_the_security_headers(client, path):
    headers = client.get(path).headers
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["X-Frame-Options"] == "DENY"


def test_html_pages_get_a_content_security_policy_that_forbids_framing(client):
    response = client.get("/docs")
    assert response.headers["content-type"].startswith("text/html")
    csp = response.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp
    # Swagger UI comes from tokensmith itself: no other origin is allowed at all.
    assert "https:" not in csp and "default-src 'none'" in csp


def test_api_answers_carry_the_api_csp_but_a_page_that_set_its_own_keeps_it(app, client):
    from fastapi.responses import HTMLResponse

    @app.get("/v1/own-page", include_in_schema=False)
    def own_page() -> HTMLResponse:
        return HTMLResponse("<p>hi</p>", headers={"Content-Security-Policy": "default-src 'self'"})

    for path in ("/healthz", "/v1/whoami", "/openapi.json", "/v1/no-such-thing"):
        assert client.get(path).headers["Content-Security-Policy"] == API_CSP
    assert client.get("/v1/own-page").headers["Content-Security-Policy"] == "default-src 'self'"


def _fail() -> None:
    raise RuntimeError("boom")


@pytest.mark.parametrize(("path", "csp"), [("/v1/boom", API_CSP), ("/boom", CONSOLE_CSP)])
def test_a_500_carries_the_security_headers_of_its_part(app, client, path, csp):
    app.add_api_route(path, _fail, include_in_schema=False)
    response = client.get(path)
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Content-Security-Policy"] == csp
    assert response.headers["Cache-Control"] == "no-store"


def test_the_middleware_stack_is_the_declared_one_in_its_order(app):
    # Outermost first: the forward-auth fast path, then the security headers wrapping Starlette's
    # error middleware, which wraps the rest.
    layers, layer = [], app.build_middleware_stack()
    while hasattr(layer, "app"):
        layers.append(type(layer).__name__)
        layer = layer.app
    assert layers[:4] == ["HotDoors", "TrustedTls", "ResponseHeaders", "ServerErrorMiddleware"]
    # Below FastAPI's own outer layers, above the problem handlers: the body limit, before any parsing.
    assert layers.index("ServerErrorMiddleware") < layers.index("BodyLimit") < layers.index("ExceptionMiddleware")
    assert layers.count("ResponseHeaders") == 1 and layers.count("HotDoors") == 1


# --- metrics -----------------------------------------------------------------------------------


def test_metrics_need_a_token(client):
    assert client.get("/metrics").status_code == 401


def test_metrics_need_the_metrics_read_scope(client, alice):
    response = client.get("/metrics", headers=alice.headers)
    assert response.status_code == 403 and "metrics:read" in response.json()["detail"]


def _sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.split(" ")[0] == name:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in the exposition")


def test_metrics_count_verifications_by_outcome_and_active_tokens(client, admin, alice, clock):
    first = client.get("/metrics", headers=admin.headers).text
    client.get("/v1/whoami", headers=alice.headers)
    client.get("/v1/whoami", headers={"Authorization": "Bearer " + secrets.generate()})
    text = client.get("/metrics", headers=admin.headers).text
    ok = 'tokensmith_verifications_total{door="api",outcome="ok"}'
    invalid = 'tokensmith_verifications_total{door="api",outcome="invalid"}'
    assert _sample(text, ok) - _sample(first, ok) == 2  # alice, then this scrape's own admin token
    assert _sample(text, invalid) - _sample(first, invalid) == 1
    assert _sample(text, "tokensmith_active_tokens") == 2
    assert "tokensmith_verification_seconds_bucket" in text
    assert "tokensmith_verification_cache_hit_ratio" in text
    assert client.get("/metrics", headers=admin.headers).headers["content-type"].startswith("text/plain")


def test_cache_hooks_feed_the_hit_ratio():
    before = dict(metrics._cache)
    metrics.observe_cache(hit=True)
    metrics.observe_cache(hit=False)
    hits, total = before["hit"] + 1, before["hit"] + before["miss"] + 2
    ratio = metrics.REGISTRY.get_sample_value("tokensmith_verification_cache_hit_ratio")
    assert ratio == pytest.approx(hits / total)


def test_verifications_feed_the_cache_lookups(client, alice):
    def lookups(result: str) -> float:
        return metrics.REGISTRY.get_sample_value("tokensmith_verification_cache_lookups_total", {"result": result})

    hits, misses = lookups("hit"), lookups("miss")
    client.get("/v1/whoami", headers=alice.headers)  # the fixture's token may be cached already
    client.get("/v1/whoami", headers=alice.headers)  # now it is
    assert lookups("hit") >= hits + 1
    assert lookups("hit") + lookups("miss") == hits + misses + 2


# --- graceful shutdown -------------------------------------------------------------------------


def test_shutdown_hooks_run_when_the_server_stops(app):
    flushed = []
    add_shutdown_hook(app, lambda: flushed.append("sync"))

    async def flush_async() -> None:
        flushed.append("async")

    add_shutdown_hook(app, flush_async)
    with TestClient(app):
        assert flushed == []
    assert flushed == ["sync", "async"]


def test_a_failing_shutdown_hook_does_not_stop_the_others(app):
    flushed = []
    add_shutdown_hook(app, lambda: 1 / 0)
    add_shutdown_hook(app, lambda: flushed.append("flushed"))
    with TestClient(app):
        pass
    assert flushed == ["flushed"]


# --- logs --------------------------------------------------------------------------------------


def _log_through(handler: logging.Handler, message: str, *args: object) -> str:
    import io

    stream = io.StringIO()
    handler.setStream(stream)  # type: ignore[attr-defined]
    logger = logging.getLogger("tokensmith.test-redaction")
    logger.propagate = False  # keep these deliberate secrets out of the suite's hygiene capture
    logger.handlers = [handler]
    logger.setLevel(logging.DEBUG)
    logger.info(message, *args)
    return stream.getvalue()


def _handler(log_format: str) -> logging.Handler:
    handler = logging.StreamHandler()
    handler.addFilter(logs.RedactSecrets())
    handler.setFormatter(logs.JsonFormatter() if log_format == "json" else logging.Formatter("%(message)s"))
    return handler


@pytest.mark.parametrize("prefix", [secrets.PREFIX, secrets.WEBHOOK_PREFIX, secrets.REPORTER_PREFIX])
def test_log_lines_never_show_a_secret_of_any_kind(prefix):
    secret = secrets.generate(prefix)
    line = _log_through(_handler("text"), "got %s from %s", secret, "Authorization: Bearer " + secret)
    assert secret not in line and logs.REDACTED in line


def test_a_mistyped_secret_is_redacted_too():
    good = secrets.generate()
    mistyped = good[:-1] + ("x" if good[-1] != "x" else "y")  # always a different last character
    assert mistyped not in _log_through(_handler("text"), "refused %s", mistyped)


def test_json_log_lines_are_json_objects():
    secret = secrets.generate()
    entry = json.loads(_log_through(_handler("json"), "token %s used", secret))
    assert entry["level"] == "info" and entry["logger"] == "tokensmith.test-redaction"
    assert entry["message"] == f"token {logs.REDACTED} used"


def test_settings_refuse_an_unknown_log_format(tmp_path):
    with pytest.raises(ValueError, match="TOKENSMITH_LOG_FORMAT"):
        Settings.from_env({"TOKENSMITH_DATA_DIR": str(tmp_path), "TOKENSMITH_LOG_FORMAT": "xml"})


# --- backup and restore ------------------------------------------------------------------------


def tokensmith(data_dir, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENSMITH_")}
    env["TOKENSMITH_DATA_DIR"] = str(data_dir)
    return subprocess.run([sys.executable, "-m", "tokensmith", *args], env=env, capture_output=True, text=True,
                          input=stdin, timeout=120)


def _users(path) -> list[str]:
    with sqlite3.connect(path) as connection:
        return sorted(row[0] for row in connection.execute("SELECT username FROM users"))


@pytest.fixture(scope="module")
def backed_up(tmp_path_factory):
    """A data directory with admin and carol, and a backup taken after carol was added."""
    data = tmp_path_factory.mktemp("backup") / "data"
    assert tokensmith(data, "admin", "--init", "create-user", "carol").returncode == 0  # a new installation
    backup = data.parent / "backup.db"
    result = tokensmith(data, "admin", "backup", str(backup))
    assert result.returncode == 0, result.stderr
    return data, backup


def test_backup_is_a_private_consistent_copy(backed_up):
    _, backup = backed_up
    assert _users(backup) == ["admin", "carol"]
    assert oct(backup.stat().st_mode & 0o777) == "0o600"
    with sqlite3.connect(backup) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_backup_refuses_to_overwrite_without_force(backed_up):
    data, backup = backed_up
    result = tokensmith(data, "admin", "backup", str(backup))
    assert result.returncode == 1 and "--force" in result.stderr


def test_restore_refuses_to_clobber_a_database_with_data(backed_up):
    data, backup = backed_up
    result = tokensmith(data, "admin", "restore", str(backup))
    assert result.returncode == 1 and "--force" in result.stderr


def test_restore_with_force_brings_the_backup_back(backed_up):
    data, backup = backed_up
    assert tokensmith(data, "admin", "create-user", "dave").returncode == 0
    result = tokensmith(data, "admin", "restore", "--force", str(backup))
    assert result.returncode == 0, result.stderr
    assert _users(data / "tokensmith.db") == ["admin", "carol"]


def test_restore_into_an_empty_data_dir_needs_no_force(backed_up, tmp_path):
    _, backup = backed_up
    result = tokensmith(tmp_path / "fresh", "admin", "restore", str(backup))
    assert result.returncode == 0, result.stderr
    assert _users(tmp_path / "fresh" / "tokensmith.db") == ["admin", "carol"]


def test_restore_refuses_a_file_that_is_not_a_tokensmith_database(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_text("not a database")
    result = tokensmith(tmp_path / "data", "admin", "restore", str(junk))
    assert result.returncode == 1 and "not a" in result.stderr


def test_backup_explains_postgresql_is_pg_dump(tmp_path):
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENSMITH_")}
    env.update(TOKENSMITH_DATA_DIR=str(tmp_path), TOKENSMITH_DATABASE_URL="postgresql+psycopg://x@127.0.0.1:1/x")
    result = subprocess.run([sys.executable, "-m", "tokensmith", "admin", "backup", str(tmp_path / "b")], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "pg_dump" in result.stderr


# --- a real server: JSON logs and graceful stop ------------------------------------------------


def test_a_real_server_logs_json_lines_and_stops_cleanly_on_sigterm(tmp_path):
    import httpx

    from tests.servers import ServerProcess, free_port, server_env

    data = tmp_path / "data"
    server = ServerProcess(data, free_port(), server_env(data, TOKENSMITH_LOG_FORMAT="json")).start()
    try:
        bad = "Bearer " + secrets.generate()
        assert httpx.get(f"{server.url}/v1/whoami", headers={"Authorization": bad}).status_code == 401
        assert httpx.get(f"{server.url}/healthz").status_code == 200
    finally:
        server.process.terminate()
        # uvicorn finishes, runs the lifespan shutdown (our hooks), then re-raises SIGTERM.
        assert server.process.wait(30) in (0, -15)
    entries = [json.loads(line) for line in server.output().splitlines() if line.startswith("{")]
    assert any(e["logger"] == "uvicorn.access" and "/v1/whoami" in e["message"] for e in entries)
    assert any(e["message"] == "Application shutdown complete." for e in entries)
    assert all(line.startswith("{") for line in server.output().splitlines() if " INFO " in line)
