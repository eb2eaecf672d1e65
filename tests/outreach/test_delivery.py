"""Delivery end to end on a scored workspace, counted on the receiving servers' side."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timedelta

import duckdb
import pytest

from devkit.generate import MP_APPS
from devkit.sandbox import SandboxConfig
from memberflow.core.contracts import CONTRACTS
from memberflow.outreach.ledger import Ledger
from memberflow.outreach.run import ConsentNotCurrentError, deliver, plan
from memberflow.outreach.suppression import CHINA
from tests.support import SCORE_DAY, make_settings, vault_phones

MORNING = datetime(2026, 3, 2, 10, 0, tzinfo=CHINA)


def delivered(server) -> Counter:
    """Deliveries per (api, recipient) as the servers applied them."""
    out = Counter()
    for r in server.state.snapshot()["received"]:
        out[(r["api"], r["key"] or r["external_userid"])] += 1
    return out


def planned_sends(settings) -> dict[str, str]:
    """Keys the latest plan of the day sends or found sent already."""
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        rows = con.execute(
            "select idempotency_key, channel from segment_memberships where as_of = ? "
            "and status in ('send', 'already_sent')",
            [SCORE_DAY],
        ).fetchall()
    return dict(rows)


def test_a_day_is_delivered_once_and_a_rerun_sends_nothing(delivery_ws, broad_segments, sandbox):
    from expectations.marts import gate_warehouse

    server = sandbox()
    report = deliver(delivery_ws, SCORE_DAY, now=MORNING)
    sends = planned_sends(delivery_ws)
    assert report.sent == len(sends) > 100 and not report.failed
    assert set(report.sent_by_channel) == {"wecom", "sms", "webhook"}
    received = delivered(server)
    assert max(received.values()) == 1
    assert sum(received.values()) == len(sends)
    ledger = Ledger.open(delivery_ws)
    assert {r["status"] for r in ledger.rows(SCORE_DAY)} == {"sent"}
    # the plan in the warehouse passes its gate, and the ledger is mirrored for readers
    assert gate_warehouse(delivery_ws, SCORE_DAY, gate="segments").ok
    with duckdb.connect(str(delivery_ws.warehouse_path), read_only=True) as con:
        assert con.execute("select count(*) from delivery_ledger").fetchall()[0][0] == len(sends)
    requests = server.state.snapshot()["requests"]

    again = deliver(delivery_ws, SCORE_DAY, now=MORNING + timedelta(hours=2))
    assert again.sent == 0 and again.already_sent == len(sends) and not again.failed
    assert server.state.snapshot()["requests"] == requests  # not one request more
    reports = sorted((delivery_ws.reports_dir / "delivery" / SCORE_DAY.isoformat()).glob("*.json"))
    assert len(reports) == 2
    assert {json.loads(r.read_text())["sent"] for r in reports} == {len(sends), 0}

    # ten days later the date is too old to act on: nothing goes, and the plan still passes its gate
    late = deliver(delivery_ws, SCORE_DAY, now=MORNING + timedelta(days=10))
    assert late.sent == 0 and late.suppressed["stale"] > 0 and late.already_sent == len(sends)
    assert gate_warehouse(delivery_ws, SCORE_DAY, gate="segments").ok
    assert server.state.snapshot()["requests"] == requests


def test_everything_arrives_once_through_injected_failures(
    delivery_ws, broad_segments, sandbox, monkeypatch, tmp_path
):
    override = tmp_path / "outreach.yml"
    override.write_text(
        "channels:\n"
        + "".join(
            f"  {c}: {{batch_size: 10, timeout_seconds: 0.5, max_attempts: 3, backoff_seconds: 0.01, "
            f"backoff_max_seconds: 0.2, rate_per_second: 200}}\n"
            for c in ("webhook", "wecom", "sms")
        )
    )
    monkeypatch.setenv("MEMBERFLOW_OUTREACH_CONFIG", str(override))
    server = sandbox(SandboxConfig(failure_rate=0.2, slow_seconds=0.8, seed=11))
    runs = []
    for hour in range(6):  # each run retries what the previous one left failed
        runs.append(deliver(delivery_ws, SCORE_DAY, now=MORNING + timedelta(hours=hour)))
        if not runs[-1].failed:
            break
    sends = planned_sends(delivery_ws)
    received = delivered(server)
    snap = server.state.snapshot()
    assert sum(snap["rejected"].values()) > 15  # the faults were real
    assert sum(r.sent for r in runs) == len(sends) and not runs[-1].failed
    assert max(received.values()) == 1 and sum(received.values()) == len(sends)
    assert {r["status"] for r in Ledger.open(delivery_ws).rows(SCORE_DAY)} == {"sent"}


KILL_SCRIPT = """
import sys
from datetime import date, datetime
from memberflow.core.settings import get_settings
from memberflow.outreach.run import deliver
deliver(get_settings(), date.fromisoformat(sys.argv[1]), now=datetime.fromisoformat(sys.argv[2]))
"""


def test_killed_mid_batch_then_rerun_delivers_everyone_exactly_once(
    delivery_ws, broad_segments, sandbox, monkeypatch, tmp_path
):
    override = tmp_path / "outreach.yml"
    override.write_text("channels:\n  webhook: {batch_size: 10, rate_per_second: 25}\n")
    monkeypatch.setenv("MEMBERFLOW_OUTREACH_CONFIG", str(override))
    server = sandbox()
    env = {
        **os.environ,
        "MEMBERFLOW_HOME": str(delivery_ws.home),
        "MEMBERFLOW_DATA_DIR": str(delivery_ws.data_dir),
    }
    child = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, SCORE_DAY.isoformat(), MORNING.isoformat()],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 300
    while server.state.snapshot()["requests"]["webhook"] < 8:
        assert child.poll() is None, child.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "the delivery never reached the webhook"
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    before = delivered(server)
    assert sum(before.values()) > 0
    ledger = Ledger.open(delivery_ws)
    states = Counter(r["status"] for r in ledger.rows(SCORE_DAY))
    assert states["pending"] > 0  # it really stopped part-way

    report = deliver(delivery_ws, SCORE_DAY, now=MORNING + timedelta(minutes=30))
    sends = planned_sends(delivery_ws)
    received = delivered(server)
    assert not report.failed
    assert max(received.values()) == 1 and sum(received.values()) == len(sends)
    assert server.state.snapshot()["duplicates"] <= 10  # at most the batch in flight was sent again
    assert report.retried > 0
    assert {r["status"] for r in ledger.rows(SCORE_DAY)} == {"sent"}


def test_late_opt_outs_in_every_id_form_stop_delivery_until_landed_and_built(
    delivery_ws, broad_segments, sandbox, tmp_path
):
    """Members about to be messaged say no after the scores were built, each through another channel's id
    (an SMS reply with the phone, a store card, a unionid, a mini-program openid, a WeCom contact), some on
    the delivery day and some in a second file added to a day that had already landed; one more registers
    on the mini-program that morning (a new openid with their phone) and opts out there. Delivery refuses
    while the files are only in the channel folder, and again once they landed but the new openid belongs
    to no member yet; after the build none of them is sent to."""
    from memberflow.core.phones import phone_token
    from memberflow.pipeline import build, land_days

    data = tmp_path / "data"
    shutil.copytree(delivery_ws.data_dir, data)
    settings = make_settings(delivery_ws.home, data)
    before = plan(settings, SCORE_DAY, MORNING)
    sending = set(before.frame.filter(before.frame["status"] == "send")["member_id"].to_list())
    key = settings.id_key()
    phone_of = {phone_token(p, key): p for p in vault_phones(settings)}
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        ids = con.execute(
            "select id_type, id_value, member_id from member_identifiers "
            "where id_type in ('phone_token', 'card_no', 'unionid', 'openid', 'external_userid') "
            "order by id_type, id_value"
        ).fetchall()
    targets: dict[str, tuple[str, str]] = {}  # member -> (consent id_type, id_value as the channel writes it)
    for id_type, value, member in ids:
        form = "mobile" if id_type == "phone_token" else id_type
        if member in sending and member not in targets and sum(t[0] == form for t in targets.values()) < 2:
            if id_type == "phone_token" and value in phone_of:
                targets[member] = ("mobile", f"+86 {phone_of[value]}")
            elif id_type != "phone_token":
                targets[member] = (id_type, value)
    assert Counter(t[0] for t in targets.values()) == dict.fromkeys(
        ("mobile", "card_no", "unionid", "openid", "external_userid"), 2
    )
    # the newcomer: a member being sent to whom the warehouse knows by phone, with a new openid
    newcomer, phone = next(
        (m, phone_of[v])
        for t, v, m in ids
        if t == "phone_token" and m in sending - set(targets) and v in phone_of
    )
    app, openid = MP_APPS["wechat"], "o-registered-on-the-day"
    user = {"platform": "wechat", "app_id": app, "openid": openid, "unionid": None, "mobile": phone,
            "register_time": f"{SCORE_DAY} 07:50:00", "updated_at": f"{SCORE_DAY} 07:50:00"}  # fmt: skip
    users = data / "miniprogram" / "users" / f"dt={SCORE_DAY}"
    users.mkdir(parents=True, exist_ok=True)
    with (users / "part-9.jsonl").open("a") as handle:
        handle.write(json.dumps(user) + "\n")
    late_day = SCORE_DAY - timedelta(days=1)  # already landed: the opt-outs come in a second file
    answers = [*targets.values(), ("openid", f"wechat:{app}:{openid}")]
    for n, (id_type, value) in enumerate(answers):
        day = SCORE_DAY if n % 2 else late_day
        folder = data / "consent" / "events" / f"dt={day.isoformat()}"
        folder.mkdir(parents=True, exist_ok=True)
        event = {"event_id": f"late-{n}", "id_type": id_type, "id_value": value, "scope": "marketing",
                 "granted": "false", "event_time": f"{day} 08:30:00", "source": "settings page"}  # fmt: skip
        with folder.joinpath("part-9.jsonl").open("a") as handle:
            handle.write(json.dumps(event) + "\n")
    server = sandbox()
    with pytest.raises(ConsentNotCurrentError, match=f"dt={late_day}, {SCORE_DAY}"):
        deliver(settings, SCORE_DAY, now=MORNING)  # the opt-outs are still only in the channel folder
    tables = [c for c in CONTRACTS if c.name in ("consent.events", "miniprogram.users")]
    run = land_days(settings, [late_day, SCORE_DAY], data, tables)
    assert run.ok, run.errors
    with pytest.raises(ConsentNotCurrentError, match="memberflow build"):
        deliver(settings, SCORE_DAY, now=MORNING)  # the new openid is nobody's until the next build
    assert server.state.snapshot()["received"] == []
    build(settings)
    report = deliver(settings, SCORE_DAY, now=MORNING)
    recipients = {r["member_id"] for r in server.state.snapshot()["received"] if r.get("member_id")}
    ledger_members = {r["member_id"] for r in Ledger.open(settings).rows(SCORE_DAY)}
    assert report.sent > 0
    assert not {*targets, newcomer} & (recipients | ledger_members)
    after = plan(settings, SCORE_DAY, MORNING).frame
    theirs = after.filter(after["member_id"].is_in([*targets, newcomer]))
    # built, an opt-out makes a member `lost` (out of most segments); where one still matches, it says why
    assert set(zip(theirs["status"], theirs["reason"], strict=True)) == {("suppressed", "opted_out")}


def test_no_plain_phone_outside_the_sms_request(delivery_ws, broad_segments, sandbox, caplog):
    server = sandbox()
    import logging

    caplog.set_level(logging.DEBUG)
    report = deliver(delivery_ws, SCORE_DAY, now=MORNING)
    assert report.sent_by_channel.get("sms", 0) > 0
    phones = vault_phones(delivery_ws)
    assert len(phones) > 1000
    sent_numbers = set(server.state.sms_phones)
    assert sent_numbers and sent_numbers <= phones  # the SMS request did carry real numbers
    needles = [p.encode() for p in phones]
    leaks = []
    for path in delivery_ws.home.rglob("*"):
        if not path.is_file() or delivery_ws.vault_dir in path.parents:
            continue
        blob = path.read_bytes()
        leaks += [f"{path}: {n.decode()[:3]}…" for n in needles if n in blob]
    assert not leaks, leaks[:5]
    outside_sms = json.dumps([r for r in server.state.snapshot()["received"] if r["api"] != "sms"])
    logs = caplog.text
    assert not [p for p in phones if p in outside_sms or p in logs]


def test_planning_explains_the_members_it_acts_on_and_no_suppressed_one(delivery_ws, broad_segments):
    """Members sent to get their segment model's reasons; in a segment without one, the first model (in
    MODELS order) that scored them and gives a reason, and no model after it. Members only held out or
    suppressed stay unexplained, however many the caps hold back."""
    from memberflow.outreach.run import EXPLAINED_STATUSES, MODELS, reasons_model

    planned = plan(delivery_ws, SCORE_DAY, now=MORNING)
    frame = planned.frame
    acted = frame.filter(frame["status"].is_in(EXPLAINED_STATUSES))
    suppressed_only = set(frame["member_id"]) - set(acted["member_id"])
    assert acted.height > 100 and len(suppressed_only) > 100
    with duckdb.connect(str(delivery_ws.warehouse_path), read_only=True) as con:
        scores = {
            (member, model): reasons
            for member, model, reasons in con.execute(
                "select member_id, model, reasons from member_scores where as_of = ?", [SCORE_DAY]
            ).fetchall()
        }
    by_name = {s.name: s for s in planned.segments}
    without_model = 0
    for row in acted.iter_rows(named=True):
        model = reasons_model(by_name[row["segment"]])
        scored = [m for m in ([model] if model else MODELS) if (row["member_id"], m) in scores]
        assert scored, row
        if model:
            assert scores[(row["member_id"], model)] is not None, row
        else:
            without_model += 1
            explained = [m for m in scored if scores[(row["member_id"], m)] is not None]
            shown = next((m for m in scored if scores[(row["member_id"], m)]), None)
            # explained up to the first model with a reason, in order; none after it
            assert explained == (scored[: scored.index(shown) + 1] if shown else scored), row
        assert any(row[f"{m}_reasons"] for m in scored), row  # and the plan carries them
    assert without_model > 100  # everyone_webhook has no model of its own
    assert not [k for k, reasons in scores.items() if reasons is not None and k[0] in suppressed_only]


def test_a_day_reads_its_profiles_once_until_a_build_or_scoring_changes_them(delivery_ws):
    """Planning, the segments gate, delivery and the tag sync share one copy of the day's profiles; a new
    scoring of the day or a new build is seen at once, and nothing is kept of an unpublished warehouse."""
    import polars as pl
    from polars.testing import assert_frame_equal

    from memberflow.segments import kept_profiles, member_profiles
    from memberflow.warehouse import clear_published, publish, read_warehouse
    from ml.warehouse import write_scores

    settings = delivery_ws

    def profiles():
        with read_warehouse(settings) as con:
            return kept_profiles(settings, con, SCORE_DAY), member_profiles(con, SCORE_DAY)

    def copies():
        return [p.name for p in settings.cache_dir.glob("member_profiles-*")]

    kept, fresh = profiles()
    assert_frame_equal(kept, fresh)
    assert copies() == [f"member_profiles-{SCORE_DAY}.parquet"]
    kept, fresh = profiles()  # from the copy: the same frame, column types included
    assert_frame_equal(kept, fresh)

    # churn scored again for the day, with other probabilities: the next reader sees them
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        churn = con.sql(
            "select * replace (1 - probability as probability, now()::timestamp as scored_at) "
            "from member_scores where model = 'churn' and as_of = $day",
            params={"day": SCORE_DAY},
        ).pl()
    write_scores(settings, "churn", SCORE_DAY, churn.to_arrow())
    kept, fresh = profiles()
    assert_frame_equal(kept, fresh)
    got = kept.join(churn, on="member_id").select(pl.col("churn_probability") - pl.col("probability"))
    assert got.height == churn.height and got.to_series().abs().max() == 0

    # a change the marts gate has not published is not read (the copy is); a build clears the publication
    member = kept["member_id"][0]
    with duckdb.connect(str(settings.warehouse_path)) as con:
        con.execute("update dim_member set staff_owner = 'moved-by-the-build' where member_id = ?", [member])

    def owner(frame):
        return frame.filter(pl.col("member_id") == member)["staff_owner"].to_list()

    kept, fresh = profiles()
    assert owner(kept) != owner(fresh) == ["moved-by-the-build"]
    clear_published(settings, "marts")
    kept, _ = profiles()
    assert owner(kept) == ["moved-by-the-build"] and copies() == []
    publish(settings, "marts", SCORE_DAY.isoformat(), "passed")
    kept, fresh = profiles()
    assert_frame_equal(kept, fresh)
    assert owner(kept) == ["moved-by-the-build"] and copies() == [f"member_profiles-{SCORE_DAY}.parquet"]
