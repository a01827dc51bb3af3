"""The first admin's initial-password file goes once that password stops working: after a change in
the console, or a reset there (tests/test_serve.py: a real serve, and the start-up safety net)."""

import pytest

from tests.test_console_http import csrf_of, user_with_password
from tokensmith.bootstrap import INITIAL_PASSWORD_FILE


@pytest.fixture
def password_file(settings):
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    path = settings.data_dir / INITIAL_PASSWORD_FILE
    path.write_text("the-initial-password\n")
    return path


def change_password(client, current: str, new: str):
    data = {"csrf": csrf_of(client, "/account/password"), "current": current, "new": new, "confirm": new}
    return client.post("/account/password", data=data, follow_redirects=False)


def test_the_admin_changing_the_password_removes_the_file(client, console, database, clock, password_file):
    admin = user_with_password(database, clock, "admin", "the-initial-password", is_admin=True,
                               must_change_password=True)
    console(admin)
    assert change_password(client, "the-initial-password", "a-password-of-my-own").status_code == 303
    assert not password_file.exists()


def test_a_wrong_current_password_keeps_the_file(client, console, database, clock, password_file):
    admin = user_with_password(database, clock, "admin", "the-initial-password", is_admin=True)
    console(admin)
    assert change_password(client, "not-it-at-all", "a-password-of-my-own").status_code == 422
    assert password_file.exists()


def test_another_user_changing_a_password_keeps_the_file(client, console, database, clock, password_file):
    alice = user_with_password(database, clock, "alice", "alices-password-1")
    console(alice)
    assert change_password(client, "alices-password-1", "alices-password-2").status_code == 303
    assert password_file.exists()


def test_an_admin_resetting_the_first_admins_password_removes_the_file(client, console, database, clock,
                                                                       password_file):
    first = user_with_password(database, clock, "admin", "the-initial-password", is_admin=True)
    other = user_with_password(database, clock, "root2", "root2-password", is_admin=True)
    console(other)
    response = client.post(f"/users/{first.public_id}/reset-password", data={"csrf": csrf_of(client, "/users")},
                           follow_redirects=False)
    assert response.status_code == 303
    assert not password_file.exists()
