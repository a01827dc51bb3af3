"""The server hides what start-up built from the garbage collector (api/app.py ``_freeze_heap``), so a
full collection walks only what requests made, not the ~290,000 objects of the app itself."""

from __future__ import annotations

import gc

from fastapi.testclient import TestClient

from tests.conftest import SECRET_KEY
from tokensmith.api.app import create_app


def test_the_servers_app_freezes_what_start_up_built(settings, database, clock):
    gc.unfreeze()
    try:
        with TestClient(create_app(settings, database, SECRET_KEY, clock, freeze_heap=True)) as client:
            assert gc.get_freeze_count() > 10_000
            assert client.get("/healthz").status_code == 200  # and it serves
    finally:
        gc.unfreeze()  # the test process goes on collecting as usual


def test_an_app_built_for_tests_freezes_nothing(client):
    assert client.get("/healthz").status_code == 200
    assert gc.get_freeze_count() == 0
