"""Shared fixtures. Every test that touches the database runs on SQLite and on PostgreSQL.

PostgreSQL comes from TOKENSMITH_TEST_DATABASE_URL (a server URL; each test session makes
its own database there). On CI (CI=true) it is mandatory: unreachable means fail, not skip.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import settings as hypothesis_settings
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tokensmith.accounts import passwords
from tokensmith.accounts.service import AccountService
from tokensmith.api.app import create_app
from tokensmith.clock import FrozenClock
from tokensmith.config import Settings
from tokensmith.db.database import Database
from tokensmith.db.migrate import upgrade
from tokensmith.db.models import Base, User
from tokensmith.net.outbound import parse_networks
from tokensmith.tokens.service import TokenService

# Timing belongs in bench/, not in tests: no per-example deadline on a shared, noisy machine.
hypothesis_settings.register_profile("tokensmith", deadline=None)
hypothesis_settings.load_profile("tokensmith")

SECRET_KEY = b"test-secret-key-0123456789abcdef-0123456789"
ON_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PG_ENV = "TOKENSMITH_TEST_DATABASE_URL"
PRODUCTION_PASSWORD_HASHER = passwords._hasher  # before cheap_password_hashing swaps it for tests
LOOPBACK_NETWORKS = "127.0.0.0/8"  # TOKENSMITH_WEBHOOK_ALLOWED_NETWORKS for tests' own receivers
# Secret hygiene for the whole suite: DEBUG logs, responses and database files scanned for secrets.
pytest_plugins = ["tests.hygiene"]


def _console_reveal(response) -> bool:
    # The console shows a new secret once, on the page its create form redirects to (POST-redirect-GET).
    return (response.request.method == "GET" and not response.request.url.path.startswith("/v1/")
            and 'id="reveal-dialog"' in response.text)


def pytest_configure(config: pytest.Config) -> None:
    from tests import hygiene  # imported by then as a plugin, so its asserts are rewritten

    hygiene.allow_reveal(_console_reveal)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="run long fuzz, soak and scale tests")


@pytest.hookimpl(wrapper=True, tryfirst=True)  # marks before xdist reads them, its group suffix checked after
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> Iterator[None]:
    for item in items:
        _share_module_fixtures(item)
    if not config.getoption("--run-slow"):
        skip = pytest.mark.skip(reason="long run: enable with --run-slow")
        for item in items:
            if "slow" in item.keywords:
                item.add_marker(skip)
    yield
    if getattr(config.option, "loadgroup", False):
        _apply_xdist_groups(items)


def _apply_xdist_groups(items: list[pytest.Item]) -> None:
    """Give an xdist worker's grouped tests their ``@group`` node id suffix, which ``--dist loadgroup`` groups by.

    pytest-xdist 3.8 sets ``item._nodeid``, which pytest 9 no longer reads (the node id lives in ``_id``):
    without this every group was silently dealt to both workers (two real API servers, each module
    server twice)."""
    from _pytest.nodeid import coerce_node_id

    for item in items:
        names = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                        for m in item.iter_markers("xdist_group")})
        if names and "@" not in item.nodeid.rsplit("::", 1)[-1]:
            item._id = coerce_node_id(f"{item.nodeid}@{'_'.join(names)}")


def _share_module_fixtures(item: pytest.Item) -> None:
    """Tests using a module-scoped fixture (a server, a browser, a database of the module's own) run on one
    xdist worker: ``--dist loadgroup`` otherwise deals a module's tests to both workers and each builds the
    fixture. xdist deals groups before single tests, largest first, so no group is left for the end."""
    if item.get_closest_marker("xdist_group"):
        return
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return
    if any(defs and defs[-1].scope in ("module", "class", "package") for defs in info.name2fixturedefs.values()):
        item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::", 1)[0]))


def require(condition: bool, reason: str) -> None:
    """Skip locally when a mandatory tool is missing; on CI, fail instead."""
    if condition:
        return
    if ON_CI:
        pytest.fail(f"mandatory on CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session", autouse=True)
def no_dns_lookups() -> Iterator[None]:
    """Only loopback traffic: names other than loopback ones do not resolve in tests (tests/netguard.py)."""
    import socket

    from tests import netguard

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket, "getaddrinfo", netguard.guarded(socket.getaddrinfo))
        yield


@pytest.fixture(scope="session", autouse=True)
def cheap_password_hashing() -> Iterator[None]:
    """argon2id with the smallest cost for in-process tests: the production cost (64 MiB, 3 passes) takes
    ~0.1 s a hash, over a second on a busy CI box, and hundreds of sign-ins made it minutes of the run.
    The algorithm and the code paths stay the same; real ``tokensmith serve`` processes keep the real cost,
    and test_accounts_hardening.py checks the production parameters."""
    from argon2 import PasswordHasher

    cheap = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    assert passwords._hasher is PRODUCTION_PASSWORD_HASHER
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(passwords, "_hasher", cheap)
        patch.setattr(passwords, "_DUMMY_HASH", cheap.hash("dummy"))
        yield


@pytest.fixture(scope="session", autouse=True)
def routes_built_once_per_worker() -> Iterator[None]:
    """FastAPI (0.137 on) builds every route of an included router for each app, on the app's first request that
    looks at that router: its dependency graph and its pydantic validators. A server builds one app; the suite
    builds one per test, ~2,500 from the same module-level routers, and that building was half the CPU time of
    the in-process tests. Here a route built for one app serves the next app that includes it the same way;
    what a request then runs is unchanged. An app with ``dependency_overrides`` builds its own routes (a built
    route keeps the overrides of the app it was built for)."""
    from fastapi import routing

    build = routing._EffectiveRouteContext.from_api_route
    built: dict[int, tuple[object, list[tuple[object, object]]]] = {}  # id(route) -> (route, [(inclusion, built)])

    def from_api_route(cls, *, original_route, include_context):
        if getattr(include_context.dependency_overrides_provider, "dependency_overrides", None):
            return build(original_route=original_route, include_context=include_context)
        inclusion = replace(include_context, dependency_overrides_provider=None)
        _route, contexts = built.setdefault(id(original_route), (original_route, []))  # the route kept: ids stay
        for same, context in contexts:
            if same == inclusion:
                return context
        context = build(original_route=original_route, include_context=include_context)
        contexts.append((inclusion, context))
        return context

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(routing._EffectiveRouteContext, "from_api_route", classmethod(from_api_route))
        yield


# --- databases -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied for each test (faster than migrating each time)."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    database = Database(f"sqlite:///{path}")
    upgrade(database.engine)
    database.dispose()
    return path


@contextmanager
def fresh_postgres_database(prefix: str, *, migrate: bool) -> Iterator[str]:
    """A PostgreSQL database of its own on TOKENSMITH_TEST_DATABASE_URL's server (skipped locally when
    there is none, failing on CI); scanned for secrets, then dropped."""
    server = os.environ.get(PG_ENV)
    require(bool(server), f"PostgreSQL tests need {PG_ENV}, e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test")
    url = make_url(server)
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        require(False, f"PostgreSQL at {url.render_as_string(hide_password=True)} is unreachable: {exc}")
    database_url = url.set(database=name).render_as_string(hide_password=False)
    if migrate:
        database = Database(database_url)
        upgrade(database.engine)
        database.dispose()
    yield database_url
    from tests import hygiene  # the secret-hygiene check sees the database before it goes

    hygiene.scan_postgres(database_url)
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test session (per xdist worker)."""
    with fresh_postgres_database("tsm_test", migrate=True) as url:
        yield url


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[str]:
    """A PostgreSQL database of a module's own: for a server that outlives single tests (the session's
    database is emptied by every test that uses it); the server migrates it."""
    with fresh_postgres_database("tsm_own", migrate=False) as url:
        yield url


def _empty_all_tables(database: Database) -> None:
    # DELETE beats TRUNCATE by far on a handful of tiny tables.
    with database.engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(table.delete())


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        path = tmp_path / "tokensmith.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    if not database.is_sqlite:
        _empty_all_tables(database)
    yield database
    database.dispose()


# --- the app ---------------------------------------------------------------------------------


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def settings(tmp_path: Path, database: Database) -> Settings:
    # Webhook receivers in tests listen on loopback, which the default outbound rules refuse.
    return Settings(data_dir=tmp_path / "data", database_url=database.url,
                    webhook_allowed_networks=parse_networks(LOOPBACK_NETWORKS))


@pytest.fixture
def app(settings: Settings, database: Database, clock: FrozenClock):
    return create_app(settings, database, SECRET_KEY, clock)


@pytest.fixture
def client(app) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@dataclass
class Account:
    """A user with a ready token, as tests use them."""

    user: User
    secret: str
    token_id: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secret}"}


@pytest.fixture
def make_account(database: Database, clock: FrozenClock):
    def make(username: str, *, org: str = "default", admin: bool = False, expiration: str = "30d") -> Account:
        with database.session() as session:
            accounts = AccountService(session, clock)
            # No password: argon2 is deliberately slow, and these users sign in with tokens.
            user = accounts.create_user(accounts.get_or_create_org(org), username, None, is_admin=admin)
            created = TokenService(session, clock, SECRET_KEY).create(user, f"{username}'s token",
                                                                      expiration=expiration)
            return Account(user, created.secret, created.token.public_id)

    return make


@pytest.fixture
def admin(make_account) -> Account:
    return make_account("admin", admin=True)


@pytest.fixture
def alice(make_account) -> Account:
    return make_account("alice")


@pytest.fixture
def bob(make_account) -> Account:
    return make_account("bob")


@pytest.fixture
def mallory(make_account) -> Account:
    """An admin of another organization."""
    return make_account("mallory", org="evil-corp", admin=True)


@pytest.fixture
def console(client, database: Database, clock: FrozenClock):
    """Sign a TestClient in to the web console as a user (a session made directly: argon2 is slow on purpose)."""
    from tokensmith.console.sessions import SessionService

    def sign_in(user: User, test_client: TestClient | None = None) -> TestClient:
        with database.session() as session:
            session_id = SessionService(session, clock, SECRET_KEY).start(user)
        target = test_client or client
        target.cookies.set("tsm_session", session_id)
        return target

    return sign_in


# --- the browser -------------------------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


@pytest.fixture(scope="session")
def chromium() -> Iterator:
    """One headless Chromium (Debian's, driven by Playwright) per xdist worker: launching one took seconds of a
    loaded 2-core box for each browser module. Modules use it through ``browser``, each in contexts of its own
    (cookies, storage, permissions and downloads are per context), so nothing carries from one module to
    the next."""
    require(os.path.exists(CHROMIUM), f"browser tests need Debian's chromium at {CHROMIUM}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require(False, "browser tests need Playwright for Python (pip install -e '.[test]')")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        _playwright_loop_running(launched, True)  # the last test of the worker's run may be any test
        launched.close()


def _playwright_loop_running(browser, running: bool) -> None:
    """Playwright's sync API runs its event loop in a greenlet and, between calls, leaves this thread marked as
    running that loop. Only a browser module may see that mark: with it, ``asyncio.run`` in any other test on the
    worker fails ("cannot be called from a running event loop"), and without it Playwright's own next call fails.
    """
    import asyncio

    asyncio._set_running_loop(browser._loop if running else None)


@pytest.fixture(scope="module")
def browser(chromium) -> Iterator:
    """The worker's Chromium for one module's tests (see ``chromium``)."""
    _playwright_loop_running(chromium, True)
    yield chromium
    _playwright_loop_running(chromium, False)


# --- the real Kubernetes API server -----------------------------------------------------------


@pytest.fixture(scope="session")
def real_kube(tmp_path_factory: pytest.TempPathFactory):
    """One real kube-apiserver wired to one tokensmith over TLS for the whole session (tests/kubeapi.py).

    Modules using it carry ``pytest.mark.xdist_group("kube-apiserver")``: with ``--dist loadgroup`` one
    worker runs them all, so the API server starts once per run. Tests leave it usable for the next:
    names they create are unique, and anything they widen (a binding) they take back.
    """
    from tests.kubeapi import missing_parts, start_real_cluster

    require(not missing_parts(), f"the real API server needs {', '.join(missing_parts())}")
    with start_real_cluster(tmp_path_factory.mktemp("kube-real")) as wired:
        yield wired
