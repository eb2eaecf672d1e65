"""Property: an opt-out in any id form the consent contract accepts, arriving as a late file in a landed day
or in a new day, keeps its member out of every payload once it has landed, and stops delivery until then."""

from __future__ import annotations

import json
import shutil
import uuid
from datetime import timedelta

import duckdb
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memberflow.core.contracts import get_contract
from memberflow.core.phones import phone_token
from memberflow.outreach.run import ConsentNotCurrentError, messages_for, plan, require_current_consent
from memberflow.pipeline import land_days
from tests.support import MORNING, SCORE_DAY, make_settings, vault_phones

# How people write a number the consent contract accepts (the normalizer folds them to one phone).
PHONE_FORMS = (
    lambda p: p,
    lambda p: f"+86 {p}",
    lambda p: f"0086-{p[:3]}-{p[3:7]}-{p[7:]}",
    lambda p: f"({p[:3]}) {p[3:7]} {p[7:]}",
    lambda p: "".join(chr(ord(c) + 0xFEE0) for c in p),  # full-width digits
)
CONSENT = get_contract("consent", "events")


@pytest.fixture(scope="module")
def world(tmp_path_factory, scored):
    """A copy of the scored workspace and its channel folder, the members the day's plan sends to, and the
    identifiers they can opt out with, as (member, consent id_type, value or phone token)."""
    root = tmp_path_factory.mktemp("opt-outs")
    shutil.copytree(scored.home, root / "ws")
    shutil.copytree(scored.data_dir, root / "data")
    ws = make_settings(root / "ws", root / "data")
    first = plan(ws, SCORE_DAY, MORNING).frame
    sending = set(first.filter(pl.col("status") == "send")["member_id"].to_list())
    phones = {phone_token(p, ws.id_key()): p for p in vault_phones(ws)}
    with duckdb.connect(str(ws.warehouse_path), read_only=True) as con:
        rows = con.execute(
            "select member_id, id_type, id_value from member_identifiers where id_type in "
            "('phone_token', 'card_no', 'unionid', 'openid', 'external_userid') order by all"
        ).fetchall()
    candidates = [
        (m, "mobile" if t == "phone_token" else t, phones[v] if t == "phone_token" else v)
        for m, t, v in rows
        if m in sending and (t != "phone_token" or v in phones)
    ]
    assert {c[1] for c in candidates} == {"mobile", "card_no", "unionid", "openid", "external_userid"}
    return ws, candidates, set()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_landed_opt_out_in_any_id_form_keeps_its_member_out_of_every_payload(world, data):
    ws, candidates, opted_out = world
    member, id_type, value = data.draw(st.sampled_from(candidates), label="identifier")
    if id_type == "mobile":
        value = data.draw(st.sampled_from(PHONE_FORMS), label="written as")(value)
    # the day before the delivery date is landed already (a second file); the delivery date is new
    day = data.draw(st.sampled_from([SCORE_DAY - timedelta(days=1), SCORE_DAY]), label="arrives in")
    folder = ws.data_dir / "consent" / "events" / f"dt={day}"
    folder.mkdir(parents=True, exist_ok=True)
    event = {"event_id": f"opt-{uuid.uuid4().hex[:12]}", "id_type": id_type, "id_value": value,
             "scope": "marketing", "granted": "false", "event_time": f"{day} 23:59:00",
             "source": "reply"}  # fmt: skip
    (folder / f"part-{uuid.uuid4().hex[:8]}.jsonl").write_text(json.dumps(event, ensure_ascii=False) + "\n")
    with pytest.raises(ConsentNotCurrentError):
        require_current_consent(ws, SCORE_DAY)  # in the channel folder only: nothing may be sent
    run = land_days(ws, [day], ws.data_dir, [CONSENT])
    assert run.ok, run.errors
    opted_out.add(member)
    planned = plan(ws, SCORE_DAY, MORNING)
    sends = set(planned.frame.filter(pl.col("status") == "send")["idempotency_key"].to_list())
    payload = {m.member_id for m in messages_for(planned, sends)}
    assert payload and not payload & opted_out
