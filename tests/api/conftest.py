"""Fixtures of the ops API tier: a delivered workspace, tokens of every kind, a client and a live server."""

from __future__ import annotations

import dataclasses
import shutil
import sqlite3

import duckdb
import httpx
import polars as pl
import pytest

from memberflow.core.settings import Settings
from tests.support import HISTORY_DAYS, MORNING, SCORE_DAY, make_settings


@dataclasses.dataclass
class Tokens:
    ops: str
    admin: str
    revoked: str
    expired: str
    staff: str  # a 导购 acting as STAFF_ID
    health_manager: str  # a 健康管理师 acting as STAFF_ID
    other_staff: str  # a staff token of someone else
    store_manager: str  # 店长 of STAFF_ID's store
    other_store_manager: str  # 店长 of another store


STAFF_ID = "staff011"  # a staff member with a queue on the scored day
STORE_ID = "S001"  # their store in the sample's staff directory (staff k works at store k % 10)
OTHER_STORE_ID = "S002"


@pytest.fixture(scope="session")
def ops_ws(tmp_path_factory, scored) -> Settings:
    """The scored workspace after a real delivery of the scored day through the sandbox APIs (starter
    segments), with two earlier days of memberships for the trend (the scored day's plan on a sample of
    members: the sample has scores for one day only)."""
    from devkit.sandbox import SandboxServer
    from memberflow.outreach.readback import read_back
    from memberflow.outreach.run import deliver, plan, write_memberships
    from memberflow.outreach.suppression import idempotency_key

    home = tmp_path_factory.mktemp("ops") / "ws"
    shutil.copytree(scored.home, home)
    settings = make_settings(home, scored.data_dir)
    with pytest.MonkeyPatch.context() as mp, SandboxServer() as sandbox:
        for key, value in sandbox.env().items():
            mp.setenv(key, value)
        for i, day in enumerate(HISTORY_DAYS):
            planned = plan(settings, SCORE_DAY, now=MORNING)
            frame = planned.frame.sample(fraction=0.7 + 0.1 * i, seed=i)
            frame = frame.with_columns(  # each day's items have that day's keys, as a plan of the day would
                idempotency_key=pl.Series(
                    [
                        idempotency_key(s, m, day)
                        for s, m in zip(frame["segment"], frame["member_id"], strict=True)
                    ],
                    dtype=pl.Utf8,
                )
            )
            write_memberships(settings, dataclasses.replace(planned, as_of=day, frame=frame))
        report = deliver(settings, SCORE_DAY, now=MORNING)
        assert report.sent > 0, report
        # STAFF_ID sent their last queued member's message in WeCom: read back, it settles that item
        with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
            last = con.execute(
                "select external_userid from staff_queue where as_of = ? and staff_owner = ? "
                "order by position desc limit 1",
                [SCORE_DAY, STAFF_ID],
            ).fetchone()[0]
        httpx.post(
            f"{sandbox.url}/_sandbox/wecom/confirm", json={"sender": STAFF_ID, "external_userid": [last]}
        )
        assert read_back(settings, SCORE_DAY, sleep=lambda s: None).marked == 1
    return settings


@pytest.fixture(scope="session")
def tokens(ops_ws) -> Tokens:
    from memberflow.api.access import AccessStore, access_path

    store = AccessStore.open(ops_ws)
    ops = store.create("olivia", "ops").token
    admin = store.create("adam", "admin").token
    revoked = store.create("rex", "ops")
    store.revoke(revoked.token_id)
    expired = store.create("eve", "ops", days=1)
    with sqlite3.connect(access_path(ops_ws)) as con:
        con.execute("update tokens set expires_at = '2000-01-01T00:00:00+00:00' where token_id = ?",
                    (expired.token_id,))  # fmt: skip
    staff = store.create("sally", "staff", staff_id=STAFF_ID).token
    health = store.create("hm-li", "health_manager", staff_id=STAFF_ID).token
    other = store.create("otto", "staff", staff_id="staff012").token
    manager = store.create("mona", "store_manager", store_id=STORE_ID).token
    other_manager = store.create("max", "store_manager", store_id=OTHER_STORE_ID).token
    return Tokens(ops, admin, revoked.token, expired.token, staff, health, other, manager, other_manager)


@pytest.fixture(scope="session")
def api_app(ops_ws, tokens):
    from memberflow.api.app import create_app

    return create_app(ops_ws)


@pytest.fixture
def client(api_app):
    from fastapi.testclient import TestClient

    with TestClient(api_app) as c:
        yield c
