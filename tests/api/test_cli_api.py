"""The ops API's commands: tokens, audit, and `memberflow serve` as a real process."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
from typer.testing import CliRunner

from memberflow.cli import app
from tests.support import TEST_ID_KEY, fake_phone

runner = CliRunner()


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("MEMBERFLOW_HOME", str(tmp_path / "ws"))
    monkeypatch.setenv("MEMBERFLOW_ID_KEY", TEST_ID_KEY)
    monkeypatch.setenv("COLUMNS", "200")  # rich tables at full width
    return tmp_path


def test_tokens_are_shown_once_listed_without_secret_and_revoked(env):
    made = runner.invoke(app, ["tokens", "create", "--name", "li.na", "--role", "ops", "--days", "30"])
    assert made.exit_code == 0, made.output
    token = made.output.strip().splitlines()[-1]
    assert re.fullmatch(r"mf_[0-9a-f]{8}_[A-Za-z0-9_-]{40,}", token)
    token_id = token.split("_")[1]
    listed = runner.invoke(app, ["tokens", "list"])
    assert (
        "li.na" in listed.output and token_id in listed.output and token.split("_", 2)[2] not in listed.output
    )
    assert (env / "ws" / "api" / "access.sqlite").exists()
    assert token.encode() not in (env / "ws" / "api" / "access.sqlite").read_bytes()
    bad = runner.invoke(app, ["tokens", "create", "--name", "x", "--role", "superuser"])
    assert bad.exit_code == 2 and "unknown role" in bad.output
    # a store manager oversees one store: without --store it is refused with what to give
    bad = runner.invoke(app, ["tokens", "create", "--name", "chen", "--role", "store_manager"])
    assert bad.exit_code == 2 and "--store" in bad.output
    made = runner.invoke(
        app, ["tokens", "create", "--name", "chen", "--role", "store_manager", "--store", "S001"]
    )
    assert made.exit_code == 0 and "S001" in runner.invoke(app, ["tokens", "list"]).output
    assert runner.invoke(app, ["tokens", "revoke", token_id]).exit_code == 0
    assert runner.invoke(app, ["tokens", "revoke", token_id]).exit_code == 1  # already revoked
    from memberflow.api.access import AccessStore
    from memberflow.core.settings import get_settings

    assert AccessStore.open(get_settings()).verify(token) is None


def test_audit_lists_exports_and_lookups(env):
    from memberflow.api.access import AccessStore, Principal
    from memberflow.core.settings import get_settings

    store = AccessStore.open(get_settings())
    who = Principal("abcd1234", "adam", "admin")
    store.audit_finish(store.audit_start(who, "export", "care", "2026-03-02", None, True), 42)
    out = runner.invoke(app, ["audit"]).output
    assert "adam" in out and "export" in out and "yes" in out and "42" in out and "completed" in out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_runs_as_a_process_and_logs_route_templates_only(env):
    made = runner.invoke(app, ["tokens", "create", "--name", "olivia"])
    token = made.output.strip().splitlines()[-1]
    port = _free_port()
    phone = fake_phone(12345678)
    proc = subprocess.Popen(
        [sys.executable, "-m", "memberflow", "serve", "--port", str(port)],
        env=os.environ.copy(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/api/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "serve did not come up"
            time.sleep(0.3)
        assert httpx.get(f"{url}/api/me", headers={"Authorization": f"Bearer {token}"}).json() == {
            "name": "olivia", "role": "ops", "staff_id": None, "store_id": None,
        }  # fmt: skip
        # nothing built yet: a clear 503, not an error page
        res = httpx.get(f"{url}/api/segments", headers={"Authorization": f"Bearer {token}"})
        assert res.status_code == 503 and "run the pipeline" in res.json()["detail"]
        res = httpx.get(f"{url}/api/members/m0123456789abcdef?phone={phone}", headers={"Authorization": "x"})
        assert res.status_code == 401
        assert httpx.get(url).status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert "GET /api/me 200" in out and "olivia" in out
    assert "GET /api/members/{member_id} 401" in out
    assert "m0123456789abcdef" not in out and phone not in out and token not in out
