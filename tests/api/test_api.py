"""The ops API over a delivered workspace: every endpoint, the role matrix, masking, audit, logs, CORS."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import re
import subprocess
import sys
from datetime import date
from decimal import Decimal

import duckdb
import pytest

from memberflow.api.access import AccessStore
from memberflow.api.app import WEB_DIR
from memberflow.transform import latest_landed_day
from memberflow.warehouse import warehouse_lock
from tests.api.conftest import STAFF_ID, STORE_ID
from tests.support import HISTORY_DAYS, SCORE_DAY, auth, fake_phone, make_settings, vault_phones

DAY = SCORE_DAY.isoformat()
PHONE = re.compile(r"(?<!\d)1[3-9]\d{9}(?!\d)")


def _sql(settings, query: str, params=None) -> list[tuple]:
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        return con.execute(query, params or []).fetchall()


def _a_segment(settings) -> str:
    """The day's segment with the most members."""
    return _sql(
        settings,
        "select segment from segment_memberships where as_of = ? group by 1 order by count(*) desc limit 1",
        [SCORE_DAY],
    )[0][0]


# --- the role matrix ---------------------------------------------------------------------------------------
def _routes(settings) -> dict[tuple[str, str], dict]:
    """Every route of the published OpenAPI with a concrete request and the role it needs."""
    segment = _a_segment(settings)
    member = _sql(settings, "select member_id from segment_memberships where as_of = ? limit 1", [SCORE_DAY])[
        0
    ][0]
    # a member of STAFF_ID's (store STORE_ID): theirs and their store manager's to open
    theirs = _sql(settings, "select member_id from dim_member where staff_owner = ? limit 1", [STAFF_ID])[0][
        0
    ]
    run = sorted((settings.reports_dir / "delivery" / DAY).glob("*.json"))[0].stem
    item = _sql(
        settings,
        "select idempotency_key from staff_queue where staff_owner = ? order by position",
        [STAFF_ID],
    )[1][0]  # the last one WeCom settles (conftest): the page shows it so
    return {
        ("get", "/api/health"): {"url": "/api/health", "needs": None},
        ("get", "/api/me"): {"url": "/api/me", "needs": "any"},
        ("get", "/api/segments"): {"url": "/api/segments", "needs": "ops"},
        ("get", "/api/segments/{segment}"): {"url": f"/api/segments/{segment}", "needs": "ops"},
        ("get", "/api/segments/{segment}/members"): {
            "url": f"/api/segments/{segment}/members",
            "needs": "ops",
        },
        ("get", "/api/segments/{segment}/export.csv"): {
            "url": f"/api/segments/{segment}/export.csv",
            "needs": "ops",
            "admin_variant": f"/api/segments/{segment}/export.csv?unmasked=true",
        },
        ("post", "/api/members/lookup"): {
            "url": "/api/members/lookup",
            "needs": "ops",
            "json": {"value": member},
        },
        ("get", "/api/members/{member_id}"): {"url": f"/api/members/{theirs}", "needs": "member"},
        ("get", "/api/models"): {"url": "/api/models", "needs": "ops"},
        ("get", "/api/models/{model}/versions/{version}/plots/{name}"): {
            "url": "/api/models/churn/versions/1/plots/roc.png",
            "needs": "ops",
        },
        ("get", "/api/deliveries"): {"url": "/api/deliveries", "needs": "ops"},
        ("get", "/api/deliveries/{as_of}/{run_id}"): {"url": f"/api/deliveries/{DAY}/{run}", "needs": "ops"},
        ("get", "/api/outcomes"): {"url": "/api/outcomes", "needs": "ops"},
        ("get", "/api/audit"): {"url": "/api/audit", "needs": "admin"},
        # a staff member's own queue: theirs, and every office role's to read; marks are theirs alone
        ("get", "/api/staff/{staff_id}/queue"): {"url": f"/api/staff/{STAFF_ID}/queue", "needs": "own"},
        ("post", "/api/staff/{staff_id}/queue/marks"): {
            "url": f"/api/staff/{STAFF_ID}/queue/marks",
            "needs": "own_staff",
            "json": {"item_id": item, "action": "done"},
        },
        ("get", "/api/queues"): {"url": "/api/queues", "needs": "manager"},
        ("get", "/api/reports"): {"url": "/api/reports", "needs": "ops"},
        ("get", "/api/labels"): {"url": "/api/labels", "needs": "any"},
        ("get", "/api/reports/{name}"): {"url": "/api/reports/channel_economics?lang=en", "needs": "ops"},
    }


ALLOWED = {
    None: {
        "nobody",
        "garbage",
        "revoked",
        "expired",
        "staff",
        "health_manager",
        "other_staff",
        "store_manager",
        "other_store_manager",
        "ops",
        "admin",
    },
    "ops": {"ops", "admin"},
    "admin": {"admin"},
    "own": {"staff", "health_manager", "store_manager", "ops", "admin"},
    "own_staff": {"staff", "health_manager"},
    "member": {"staff", "health_manager", "store_manager", "ops", "admin"},
    "manager": {"store_manager", "other_store_manager", "ops", "admin"},
    "any": {"staff", "health_manager", "other_staff", "store_manager", "other_store_manager", "ops", "admin"},
}
UNAUTHENTICATED = ("nobody", "garbage", "revoked", "expired")


def test_every_published_route_is_in_the_role_matrix(client, ops_ws):
    published = {(m, p) for p, ops in client.get("/openapi.json").json()["paths"].items() for m in ops}
    assert published == set(_routes(ops_ws))


@pytest.mark.parametrize(
    "who",
    ["nobody", "garbage", "revoked", "expired", "staff", "health_manager", "other_staff", "store_manager",
     "other_store_manager", "ops", "admin"],
)  # fmt: skip
def test_role_matrix(client, ops_ws, tokens, who):
    headers = {
        "nobody": {},
        "garbage": auth("mf_00000000_not-a-real-token"),
        "revoked": auth(tokens.revoked),
        "expired": auth(tokens.expired),
        "staff": auth(tokens.staff),
        "health_manager": auth(tokens.health_manager),
        "other_staff": auth(tokens.other_staff),
        "store_manager": auth(tokens.store_manager),
        "other_store_manager": auth(tokens.other_store_manager),
        "ops": auth(tokens.ops),
        "admin": auth(tokens.admin),
    }[who]
    for (method, _template), spec in _routes(ops_ws).items():
        urls = [spec["url"], *([spec["admin_variant"]] if "admin_variant" in spec else [])]
        for url in urls:
            needs = "admin" if url == spec.get("admin_variant") else spec["needs"]
            res = client.request(method.upper(), url, headers=headers, json=spec.get("json"))
            if needs is None or who in ALLOWED[needs]:
                expected = 200
            elif who in UNAUTHENTICATED:
                expected = 401
            else:
                expected = 403
            assert res.status_code == expected, (who, method, url, res.status_code, res.text[:200])
            if expected == 401:
                assert res.headers["www-authenticate"] == "Bearer"
            if url.startswith("/api/") and url != "/api/health":
                assert res.headers["cache-control"] == "no-store"


# --- segments ----------------------------------------------------------------------------------------------
def test_segments_sizes_reasons_and_trend_match_the_warehouse(client, ops_ws, tokens):
    body = client.get("/api/segments", headers=auth(tokens.ops)).json()
    assert body["as_of"] == DAY
    assert body["dates"] == [DAY, *(d.isoformat() for d in reversed(HISTORY_DAYS))]
    by_name = {s["name"]: s for s in body["segments"]}
    assert len(by_name) >= 7  # the starter library, whether or not a segment matched anyone today
    expected = _sql(
        ops_ws,
        "select segment, count(*), count(*) filter (where status = 'send'), "
        "count(*) filter (where status = 'holdout'), count(*) filter (where status = 'suppressed') "
        "from segment_memberships where as_of = ? group by 1",
        [SCORE_DAY],
    )
    assert expected
    for segment, size, send, holdout, suppressed in expected:
        s = by_name[segment]
        assert (s["size"], s["send"], s["holdout"], s["suppressed_total"]) == (
            size,
            send,
            holdout,
            suppressed,
        )
        assert sum(s["suppressed"].values()) == suppressed
        reasons = dict(
            _sql(
                ops_ws,
                "select reason, count(*) from segment_memberships where as_of = ? and segment = ? "
                "and status = 'suppressed' group by 1",
                [SCORE_DAY, segment],
            )
        )
        assert s["suppressed"] == reasons
        sent = _sql(
            ops_ws,
            "select count(*) from delivery_ledger where as_of = ? and segment = ? and status = 'sent'",
            [DAY, segment],
        )[0][0]
        assert s["delivery"].get("sent", 0) == sent
        assert len(s["trend"]) == 30 and s["trend"][-1]["as_of"] == DAY
        assert s["trend"][-1]["size"] == size and s["trend"][-1]["sent"] == sent
        for point in s["trend"][-3:-1]:
            assert (
                point["size"]
                == _sql(
                    ops_ws,
                    "select count(*) from segment_memberships where as_of = ? and segment = ?",
                    [point["as_of"], segment],
                )[0][0]
            )
    assert sum(s["delivery"].get("sent", 0) for s in by_name.values()) > 0
    one = client.get(f"/api/segments/{expected[0][0]}", headers=auth(tokens.ops)).json()
    assert one["size"] == expected[0][1] and one["rules"]
    older = client.get(f"/api/segments?as_of={HISTORY_DAYS[0]}", headers=auth(tokens.ops)).json()
    assert older["as_of"] == HISTORY_DAYS[0].isoformat()
    assert sum(s["size"] for s in older["segments"]) < sum(s["size"] for s in by_name.values())


def test_a_score_segment_shows_its_members_at_the_top_of_the_score(client, ops_ws, tokens):
    """What an ops person reads on a segment's page: its members' score range beside the population,
    deciles read as 10 = top tenth: the coupon and first-order lists hold deciles 7-10 of their model."""
    sizes = dict(
        _sql(
            ops_ws,
            "select segment, count(*) from segment_memberships where as_of = ? group by 1",
            [SCORE_DAY],
        )
    )
    # segment -> (model, the lowest decile or probability its rule admits)
    floors = {
        "care_high_value_at_risk": ("churn", "min_probability", 0.3),
        "replenishment_coupon_miniprogram": ("repurchase", "min_decile", 7),
        "replenishment_coupon_sms": ("repurchase", "min_decile", 7),
        "prospect_first_order": ("conversion", "min_decile", 7),
    }
    shown = [name for name in floors if sizes.get(name)]
    assert shown
    for name in shown:
        body = client.get(f"/api/segments/{name}", headers=auth(tokens.ops)).json()
        assert body["direction"] == "high"
        (scores,) = body["scores"]
        model, field, floor = floors[name]
        assert scores["model"] == model and scores["members"] == sizes[name]
        assert scores[field] >= floor and scores["max_decile"] <= 10
        assert scores["min_probability"] <= scores["median_probability"] <= scores["max_probability"]
        assert 0 < scores["population_mean"] < 1


def test_members_pages_cover_the_segment_once_with_reasons_and_masked_phones(client, ops_ws, tokens):
    segment = _a_segment(ops_ws)
    seen: list[str] = []
    page, total = 1, None
    while True:
        res = client.get(
            f"/api/segments/{segment}/members",
            params={"page": page, "page_size": 200},
            headers=auth(tokens.ops),
        )
        body = res.json()
        total = body["total"]
        seen += [m["member_id"] for m in body["items"]]
        if not body["items"]:
            break
        page += 1
    expected = {
        r[0]
        for r in _sql(
            ops_ws,
            "select member_id from segment_memberships where as_of = ? and segment = ?",
            [SCORE_DAY, segment],
        )
    }
    assert len(seen) == len(set(seen)) == total == len(expected)
    assert set(seen) == expected
    first = client.get(f"/api/segments/{segment}/members", headers=auth(tokens.ops)).json()["items"]
    statuses = [m["status"] for m in first]
    assert statuses == sorted(statuses, key=["send", "already_sent", "holdout", "suppressed"].index)
    scored = [m for m in first if m["scores"]]
    assert scored and all(m["reasons"] for m in scored if m["status"] == "send")
    assert all(m["tags"] for m in first)
    text = json.dumps(first)
    assert not PHONE.search(text)
    assert any(re.fullmatch(r"1\d\d\*{4}\d{4}", m["phone_masked"] or "") for m in first)
    only_held = client.get(
        f"/api/segments/{segment}/members", params={"status": "holdout"}, headers=auth(tokens.ops)
    ).json()
    assert all(m["status"] == "holdout" for m in only_held["items"])
    assert (
        client.get(f"/api/segments/{segment}/members?page_size=501", headers=auth(tokens.ops)).status_code
        == 422
    )


def test_member_pages_show_the_reasons_the_message_carried(client, ops_ws, tokens):
    """The segment's model's reasons, or for a segment without a model the first model's in MODELS order
    with any: the same choice the delivered messages made (memberflow.outreach.run.pick_reasons)."""
    from memberflow.core.vocab import MODELS
    from memberflow.outreach.run import reasons_model
    from memberflow.segments import load_segments

    defs = {s.name: s for s in load_segments()}
    for segment in (_a_segment(ops_ws), *(n for n, d in defs.items() if reasons_model(d))):
        page = client.get(
            f"/api/segments/{segment}/members", params={"page_size": 100}, headers=auth(tokens.ops)
        ).json()["items"]
        model = reasons_model(defs[segment])
        for m in page:
            stored = dict(
                _sql(
                    ops_ws,
                    "select model, reasons from member_scores where member_id = ? and as_of = ?",
                    [m["member_id"], SCORE_DAY],
                )
            )
            order = [model] if model else list(MODELS)
            expected = next((list(stored[x]) for x in order if stored.get(x)), [])
            assert m["reasons"] == expected, (segment, m["member_id"])


def test_before_any_delivery_segment_routes_answer_404_not_an_error(scored, tmp_path):
    """A scored warehouse without segment_memberships yet (no delivery ran): lists are empty, member pages
    and exports say so with 404, with or without a day."""
    import shutil

    from fastapi.testclient import TestClient

    from memberflow.api.app import create_app
    from tests.support import make_settings

    shutil.copytree(scored.home, tmp_path / "ws")
    settings = make_settings(tmp_path / "ws", scored.data_dir)
    token = AccessStore.open(settings).create("olivia", "ops").token
    with TestClient(create_app(settings)) as c:
        listing = c.get("/api/segments", headers=auth(token)).json()
        assert listing["as_of"] is None and all(s["size"] == 0 for s in listing["segments"])
        for query in ("", f"?as_of={DAY}"):
            for suffix in ("/members", "/export.csv"):
                res = c.get(f"/api/segments/silent_winback_content{suffix}{query}", headers=auth(token))
                assert res.status_code == 404 and "no segment memberships yet" in res.json()["detail"]


def test_unknown_and_hostile_names_are_404_not_errors(client, tokens):
    for name in ["no_such_segment", "x' or '1'='1", "a;drop table dim_member;--", "%27%22"]:
        for suffix in ("", "/members", "/export.csv"):
            res = client.get(f"/api/segments/{name}{suffix}", headers=auth(tokens.ops))
            assert res.status_code == 404, (name, suffix, res.status_code)
    assert client.get("/api/members/'; select 1; --", headers=auth(tokens.ops)).status_code == 404
    res = client.post("/api/members/lookup", json={"value": "' or 1=1 --"}, headers=auth(tokens.ops))
    assert res.status_code == 404


# --- exports and the audit trail ---------------------------------------------------------------------------
def _csv(res) -> list[dict]:
    text = res.content.decode("utf-8")
    assert text.startswith("\ufeff")
    return list(csv.DictReader(io.StringIO(text.lstrip("\ufeff"))))


def test_masked_export_has_every_member_no_plain_phone_and_an_audit_row(client, ops_ws, tokens):
    segment = _a_segment(ops_ws)
    before = len(AccessStore.open(ops_ws).audit_rows(10_000))
    res = client.get(f"/api/segments/{segment}/export.csv", headers=auth(tokens.ops))
    assert res.status_code == 200 and res.headers["content-type"].startswith("text/csv")
    rows = _csv(res)
    expected = _sql(
        ops_ws,
        "select member_id, status from segment_memberships where as_of = ? and segment = ?",
        [SCORE_DAY, segment],
    )
    assert sorted((r["member_id"], r["status"]) for r in rows) == sorted(expected)
    assert int(res.headers["x-row-count"]) == len(rows)
    assert "unionid" not in rows[0] and "external_userid" not in rows[0]
    assert not vault_phones(ops_ws) & set(PHONE.findall(res.content.decode()))
    assert any(r["reasons"] for r in rows if r["status"] == "send")
    audit = AccessStore.open(ops_ws).audit_rows(10_000)
    assert len(audit) == before + 1
    assert audit[0] | {"at": None, "finished_at": None, "audit_id": None, "detail": None} == {
        "at": None, "finished_at": None, "audit_id": None, "detail": None, "token_id": audit[0]["token_id"],
        "token_name": "olivia", "role": "ops", "action": "export", "segment": segment, "as_of": DAY,
        "unmasked": False, "rows": len(rows), "state": "completed",
    }  # fmt: skip


def test_unmasked_export_is_admin_only_and_always_audited(client, ops_ws, tokens):
    segment = _a_segment(ops_ws)
    store = AccessStore.open(ops_ws)
    before = len(store.audit_rows(10_000))
    denied = client.get(f"/api/segments/{segment}/export.csv?unmasked=true", headers=auth(tokens.ops))
    assert denied.status_code == 403
    assert len(store.audit_rows(10_000)) == before  # nothing was exported
    res = client.get(f"/api/segments/{segment}/export.csv?unmasked=true", headers=auth(tokens.admin))
    assert res.status_code == 200
    rows = _csv(res)
    audit = store.audit_rows(1)[0]
    assert (audit["token_name"], audit["unmasked"], audit["rows"], audit["state"]) == (
        "adam",
        True,
        len(rows),
        "completed",
    )
    # the plain phones are the vault's numbers of exactly these members
    from memberflow.core.phones import phone_token

    key = ops_ws.id_key()
    tokens_of = {}
    for member_id, token in _sql(
        ops_ws, "select member_id, id_value from member_identifiers where id_type = 'phone_token'"
    ):
        tokens_of.setdefault(member_id, set()).add(token)
    with_phone = [r for r in rows if r["phone"]]
    assert with_phone
    for r in with_phone:
        assert PHONE.fullmatch(r["phone"])
        assert phone_token(r["phone"], key) in tokens_of[r["member_id"]]
    assert set(r["phone"] for r in with_phone) <= vault_phones(ops_ws)


def test_an_export_cut_off_mid_stream_is_audited_as_aborted(ops_ws, tokens, tmp_path):
    from memberflow.api.access import Principal
    from memberflow.api.export import stream_csv
    from memberflow.api.reader import Reader

    segment = _a_segment(ops_ws)
    store = AccessStore.open(ops_ws)
    spool, planned, _ = Reader(ops_ws).spool_export(segment, SCORE_DAY, None, "churn", True, tmp_path)
    audit_id = store.audit_start(Principal("t", "adam", "admin"), "export", segment, DAY, None, True)
    assert store.audit_rows(1)[0]["state"] == "started"  # written before any byte leaves
    stream = stream_csv(ops_ws, spool, True, "churn", lambda rows, done: store.audit_finish(
        audit_id, rows, "completed" if done else "aborted"))  # fmt: skip
    next(stream)  # the header only, then the client goes away
    stream.close()
    row = store.audit_rows(1)[0]
    assert (row["audit_id"], row["state"], row["rows"]) == (audit_id, "aborted", 0)
    assert not spool.exists() and planned > 0


# --- members -----------------------------------------------------------------------------------------------
def test_lookup_by_phone_token_ids_and_member_id(client, ops_ws, tokens, caplog):
    from memberflow.core.phones import phone_token

    phones = sorted(vault_phones(ops_ws))
    key = ops_ws.id_key()
    by_token = dict(
        _sql(ops_ws, "select id_value, member_id from member_identifiers where id_type = 'phone_token'")
    )
    phone = next(p for p in phones if phone_token(p, key) in by_token)
    member = by_token[phone_token(phone, key)]
    caplog.set_level(logging.INFO, logger="memberflow.api")
    for value in (phone, f"+86 {phone[:3]}-{phone[3:7]}-{phone[7:]}"):
        res = client.post("/api/members/lookup", json={"value": value}, headers=auth(tokens.ops))
        assert res.json() == {"member_id": member, "matched_by": "phone"}
    res = client.post(
        "/api/members/lookup", json={"value": phone_token(phone, key)}, headers=auth(tokens.ops)
    )
    assert res.json()["member_id"] == member
    for id_type, id_value, owner in _sql(
        ops_ws,
        "select id_type, any_value(id_value), any_value(member_id) from member_identifiers "
        "where id_type in ('unionid', 'external_userid', 'card_no', 'openid') group by 1",
    ):
        res = client.post("/api/members/lookup", json={"value": id_value}, headers=auth(tokens.ops))
        assert res.json() == {"member_id": owner, "matched_by": id_type}
        if id_type == "openid":  # the bare openid, without platform and app
            bare = id_value.rsplit(":", 1)[1]
            res = client.post(
                "/api/members/lookup", json={"value": bare, "id_type": "openid"}, headers=auth(tokens.ops)
            )
            assert res.json()["member_id"] == owner
    res = client.post("/api/members/lookup", json={"value": member}, headers=auth(tokens.ops))
    assert res.json() == {"member_id": member, "matched_by": "member_id"}
    unknown = client.post("/api/members/lookup", json={"value": fake_phone(1)}, headers=auth(tokens.ops))
    assert unknown.status_code == 404
    assert client.post("/api/members/lookup", json={"value": ""}, headers=auth(tokens.ops)).status_code == 422
    lookups = [r for r in AccessStore.open(ops_ws).audit_rows(100) if r["action"] == "lookup"]
    assert lookups and not any(phone in json.dumps(r) for r in lookups)
    logged = caplog.text
    assert "POST /api/members/lookup 200" in logged
    assert phone not in logged and phone_token(phone, key) not in logged and member not in logged
    assert tokens.ops not in logged


def test_member_profile_is_masked_with_tag_timeline_and_score_history(client, ops_ws, tokens):
    member = _sql(
        ops_ws,
        "select member_id from member_identifiers group by 1 having count(distinct id_type) >= 3 limit 1",
    )[0][0]
    res = client.get(f"/api/members/{member}", headers=auth(tokens.ops))
    body = res.json()
    assert body["member"]["member_id"] == member
    raw = [
        v for (v,) in _sql(ops_ws, "select id_value from member_identifiers where member_id = ?", [member])
    ]
    assert len(body["identifiers"]) == len(raw)
    for value in raw:
        assert value not in res.text
    assert not vault_phones(ops_ws) & set(PHONE.findall(res.text))
    assert body["tags"] and body["current_tags"]
    day = date.fromisoformat(body["tags_as_of"])
    assert day == latest_landed_day(ops_ws)
    for tag in body["current_tags"]:
        assert tag["valid_from"] <= day.isoformat() and (tag["valid_to"] or "9999") > day.isoformat(), tag

    # a member whose lifecycle is projected past the last landed day (active, turning dormant 15 days
    # after the last activity): the page shows today's stage, not the projection, and one stage only
    projected = _sql(
        ops_ws,
        "select member_id, tag_value from member_tags where tag_group = 'lifecycle' and valid_from > ? "
        "order by member_id limit 1",
        [day],
    )
    assert projected, "the sample should have a lifecycle projected past its last day"
    turning, later_stage = projected[0]
    (now_stage,) = _sql(
        ops_ws,
        "select tag_value from member_tags where member_id = ? and tag_group = 'lifecycle' "
        "and valid_from <= ? and (valid_to is null or valid_to > ?)",
        [turning, day, day],
    )[0]
    current = client.get(f"/api/members/{turning}", headers=auth(tokens.ops)).json()["current_tags"]
    assert [t["tag_value"] for t in current if t["tag_group"] == "lifecycle"] == [now_stage] != [later_stage]
    scored = _sql(ops_ws, "select count(*) from member_scores where member_id = ?", [member])[0][0]
    assert len(body["scores"]) == scored
    assert client.get("/api/members/M-does-not-exist", headers=auth(tokens.ops)).status_code == 404


# --- models and deliveries ---------------------------------------------------------------------------------
def test_models_show_champion_and_challenger_with_metrics_and_plots(client, tokens):
    models = client.get("/api/models", headers=auth(tokens.ops)).json()
    assert [m["model"] for m in models] == ["churn", "repurchase", "conversion"]
    champions = [m for m in models if m["champion"]]
    assert champions
    for m in models:
        assert m["challenger"], m["model"]  # every trained model has a challenger (the latest version)
    churn = next(m for m in models if m["model"] == "churn")
    version = churn["champion"] or churn["challenger"]
    assert "model.auc" in version["metrics"] and version["plots"]
    png = client.get(
        f"/api/models/churn/versions/{version['version']}/plots/{version['plots'][0]}",
        headers=auth(tokens.ops),
    )
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    for bad in ("../../mlflow.db", "roc.txt", "nope.png"):
        res = client.get(
            f"/api/models/churn/versions/{version['version']}/plots/{bad}", headers=auth(tokens.ops)
        )
        assert res.status_code == 404, bad
    assert (
        client.get("/api/models/other/versions/1/plots/roc.png", headers=auth(tokens.ops)).status_code == 422
    )


def test_delivery_reports_list_and_detail(client, ops_ws, tokens):
    runs = client.get("/api/deliveries", headers=auth(tokens.ops)).json()
    assert runs and runs[0]["as_of"] == DAY and runs[0]["sent"] > 0
    detail = client.get(f"/api/deliveries/{DAY}/{runs[0]['run_id']}", headers=auth(tokens.ops)).json()
    assert detail["sent"] == runs[0]["sent"] and detail["sent_by_channel"]
    assert "report_path" not in detail
    for bad in ("nope", "..%2F..%2Fsecrets", "a" * 100):
        assert client.get(f"/api/deliveries/{DAY}/{bad}", headers=auth(tokens.ops)).status_code == 404


# --- serving behaviour -------------------------------------------------------------------------------------
def test_cors_is_closed_unless_origins_are_configured(ops_ws, tokens):
    from fastapi.testclient import TestClient

    from memberflow.api.app import create_app

    preflight = {"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
    with TestClient(create_app(ops_ws)) as closed:
        res = closed.options("/api/segments", headers=preflight)
        assert "access-control-allow-origin" not in res.headers
        res = closed.get("/api/me", headers={"Origin": "https://evil.example", **auth(tokens.ops)})
        assert "access-control-allow-origin" not in res.headers
    configured = make_settings(
        ops_ws.home, ops_ws.data_dir, MEMBERFLOW_API_CORS_ORIGINS="https://ops.brand.example"
    )
    with TestClient(create_app(configured)) as open_to_one:
        ok = open_to_one.options(
            "/api/segments", headers={**preflight, "Origin": "https://ops.brand.example"}
        )
        assert ok.headers["access-control-allow-origin"] == "https://ops.brand.example"
        res = open_to_one.options("/api/segments", headers=preflight)
        assert "access-control-allow-origin" not in res.headers


WRITER = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
print("writing", flush=True)
time.sleep(60)
"""


def test_a_warehouse_being_written_answers_busy_not_an_error(ops_ws, tokens):
    from fastapi.testclient import TestClient

    from memberflow.api.app import create_app

    with TestClient(create_app(ops_ws, busy_wait=0.2)) as c:
        with warehouse_lock(ops_ws):  # a memberflow writer (build, scoring, delivery)
            res = c.get("/api/segments", headers=auth(tokens.ops))
            assert res.status_code == 503 and res.headers["retry-after"] == "30"
            assert c.get("/api/me", headers=auth(tokens.ops)).status_code == 200  # no warehouse needed
        # a writer that only DuckDB's own file lock announces (dbt run by a Cosmos task), in another process
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(ops_ws.warehouse_path)], stdout=subprocess.PIPE, text=True
        )
        try:
            assert writer.stdout.readline().strip() == "writing"
            res = c.get("/api/segments", headers=auth(tokens.ops))
            assert res.status_code == 503, res.text
        finally:
            writer.kill()
            writer.wait()
        assert c.get("/api/segments", headers=auth(tokens.ops)).status_code == 200


def test_the_web_page_is_served_with_a_strict_content_policy(client):
    page = client.get("/")
    assert page.status_code == 200 and "memberflow" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/docs").status_code == 404  # Swagger UI would load scripts from a CDN
    # the chart library is served from here, and is the file its README names (version and checksum)
    readme = (WEB_DIR / "vendor" / "echarts" / "README.md").read_text()
    served = client.get("/static/vendor/echarts/echarts.common.min.js")
    assert served.status_code == 200 and hashlib.sha256(served.content).hexdigest() in readme
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page.text)  # nothing loaded from outside
    spec = client.get("/openapi.json").json()
    assert spec["info"]["title"] == "memberflow ops API"


def test_every_read_of_member_data_leaves_one_audit_row_per_request(client, ops_ws, tokens):
    store = AccessStore.open(ops_ws)
    before = store.audit_rows(1)[0]["audit_id"] if store.audit_rows(1) else 0
    segment = _a_segment(ops_ws)
    page = client.get(f"/api/segments/{segment}/members", params={"page_size": 7}, headers=auth(tokens.ops))
    items = page.json()["items"]
    member = items[0]["member_id"]
    assert client.get(f"/api/members/{member}", headers=auth(tokens.ops)).status_code == 200
    client.get(f"/api/segments/{segment}", headers=auth(tokens.ops))  # counts, no member: not audited
    rows = [r for r in store.audit_rows(100) if r["audit_id"] > before]
    assert [(r["action"], r["token_name"], r["state"]) for r in reversed(rows)] == [
        ("members_page", "olivia", "completed"),
        ("profile", "olivia", "completed"),
    ]
    listing, profile = reversed(rows)
    assert (listing["segment"], listing["rows"]) == (segment, len(items)) and 0 < len(items) <= 7
    assert profile["detail"] == f"member_id={member}" and profile["rows"] == 1


def test_lookups_are_throttled_per_token(ops_ws, tokens):
    # Testing phone numbers for membership one after another: a token gets a few lookups a minute, then 429.
    import dataclasses

    from fastapi.testclient import TestClient

    from memberflow.api.app import create_app

    app = create_app(dataclasses.replace(ops_ws, api_lookups_per_minute=3))
    with TestClient(app) as c:
        answers = [
            c.post("/api/members/lookup", json={"value": fake_phone(i)}, headers=auth(tokens.ops))
            for i in range(4)
        ]
        assert [a.status_code for a in answers] == [404, 404, 404, 429]
        assert 0 < int(answers[-1].headers["Retry-After"]) <= 60
        # another token is not held back by this one
        other = c.post("/api/members/lookup", json={"value": fake_phone(9)}, headers=auth(tokens.admin))
        assert other.status_code == 404


# --- staff queues ------------------------------------------------------------------------------------------
def test_a_staff_member_works_their_queue_and_the_office_sees_completion(client, ops_ws, tokens):
    url = f"/api/staff/{STAFF_ID}/queue"
    mine = client.get(url, headers=auth(tokens.staff)).json()
    stored = _sql(
        ops_ws,
        "select idempotency_key, health_consent, next_due_category, days_until_next_due from staff_queue "
        "where as_of = ? and staff_owner = ? order by position",
        [SCORE_DAY, STAFF_ID],
    )
    assert mine["as_of"] == DAY and mine["total"] == len(stored) > 0
    assert [i["item_id"] for i in mine["items"]] == [r[0] for r in stored]
    assert not any(i["health_details"] for i in mine["items"])  # a 导购 never sees health details
    as_manager = client.get(url, headers=auth(tokens.health_manager)).json()
    consent = {r[0]: r[1] for r in stored}
    assert [i["health_details"] for i in as_manager["items"]] == [
        consent[i["item_id"]] for i in mine["items"]
    ]
    english = client.get(f"{url}?lang=en", headers=auth(tokens.staff)).json()
    assert all(i["script"] and i["script"].isascii() for i in english["items"])

    first, second = (i["item_id"] for i in mine["items"][:2])
    marks = f"/api/staff/{STAFF_ID}/queue/marks"
    done = client.post(marks, headers=auth(tokens.staff), json={"item_id": first, "action": "done"})
    assert done.status_code == 200 and done.json()["marked_by"] == "sally"
    # a skip says why; "other" needs a note; an item of someone else's queue is not found
    bad = client.post(marks, headers=auth(tokens.staff), json={"item_id": second, "action": "skipped"})
    assert bad.status_code == 422 and "reason" in bad.text
    bad = client.post(
        marks, headers=auth(tokens.staff), json={"item_id": second, "action": "skipped", "reason": "other"}
    )
    assert bad.status_code == 422 and "note" in bad.text
    foreign = _sql(
        ops_ws, "select idempotency_key from staff_queue where staff_owner != ? limit 1", [STAFF_ID]
    )
    missing = client.post(
        marks, headers=auth(tokens.staff), json={"item_id": foreign[0][0], "action": "done"}
    )
    assert missing.status_code == 404
    skip = {"item_id": second, "action": "skipped", "reason": "member_declined", "note": "busy this week"}
    assert client.post(marks, headers=auth(tokens.health_manager), json=skip).status_code == 200

    after = {i["item_id"]: i for i in client.get(url, headers=auth(tokens.staff)).json()["items"]}
    assert after[first]["state"] == "done" and after[second]["state"] == "skipped"
    assert after[second]["skip_reason"] == "member_declined" and after[second]["marked_by"] == "hm-li"
    office = client.get("/api/queues", headers=auth(tokens.ops)).json()
    row = next(r for r in office["by_staff"] if r["key"] == STAFF_ID)
    assert row["queued"] == len(stored) and row["done"] >= 1 and row["skipped"] >= 1
    assert (
        sum(r["queued"] for r in office["by_segment"])
        == _sql(ops_ws, "select count(*) from staff_queue where as_of = ?", [SCORE_DAY])[0][0]
    )
    audit = client.get("/api/audit", headers=auth(tokens.admin)).json()
    assert any(a["action"] == "queue" and a["token_name"] == "sally" for a in audit)


def test_an_empty_segment_says_why(tmp_path):
    """Paused by monitoring, a model without scores that day, no plan yet, members taken by a segment of
    higher priority, or rules that matched nobody: each from what the day's plan and scores hold."""
    from memberflow.api.reader import Reader

    settings = make_settings(tmp_path / "ws")
    reader = Reader(settings)
    con = duckdb.connect()
    con.execute("create table member_scores (member_id varchar, model varchar, as_of date)")
    con.execute("insert into member_scores values ('m1', 'churn', '2026-03-02')")
    day = date(2026, 3, 2)
    assert reader.why_empty(con, day, {"win_back": ["churn"]})["win_back"] == {"code": "not_planned"}
    no_scores = reader.why_empty(con, day, {"first_order": ["conversion"]})["first_order"]
    assert no_scores == {"code": "no_scores", "model": "conversion"}
    folder = settings.reports_dir / "delivery" / day.isoformat()
    folder.mkdir(parents=True)
    plan = {
        "win_back": {"matched": 0, "assigned": 0},
        "care": {"matched": 12, "assigned": 0},
        "at_risk": {"matched": 0, "assigned": 0, "paused": "churn paused by monitoring: auc"},
    }
    (folder / "run1.json").write_text(json.dumps({"segments": plan}))
    assert reader.why_empty(con, day, {"win_back": ["churn"]})["win_back"] == {"code": "no_match"}
    assert reader.why_empty(con, day, {"care": []})["care"] == {"code": "taken", "matched": 12}
    paused = reader.why_empty(con, day, {"at_risk": ["churn"]})["at_risk"]
    assert paused["code"] == "paused" and paused["model"] == "churn"


def test_the_segment_list_explains_every_empty_segment(client, ops_ws, tokens):
    body = client.get("/api/segments", headers=auth(tokens.ops)).json()
    for s in body["segments"]:
        assert (s["size"] == 0) == (s["empty_reason"] is not None), s["name"]
        if s["empty_reason"]:
            assert s["empty_reason"]["code"] in {"paused", "no_scores", "not_planned", "taken", "no_match"}


# --- reports -----------------------------------------------------------------------------------------------
def test_each_report_serves_the_models_rows_with_labels_in_the_asked_language(client, ops_ws, tokens):
    index = client.get("/api/reports", headers=auth(tokens.ops)).json()
    names = [r["name"] for r in index["reports"]]
    assert names[0] == "checkin_camps" and len(names) == 7
    through = _sql(ops_ws, "select observed_through::varchar from int_report_period")[0][0]
    assert index["observed_through"] == through
    for name in names:
        zh = client.get(f"/api/reports/{name}", headers=auth(tokens.ops)).json()
        en = client.get(f"/api/reports/{name}?lang=en", headers=auth(tokens.ops)).json()
        columns = [c["name"] for c in zh["columns"]]
        expected = _sql(ops_ws, f"select {', '.join(columns)} from report_{name}")
        served = sorted((_plain(r[c] for c in columns) for r in zh["rows"]), key=str)
        assert len(served) == len(expected) > 0, name
        assert served == sorted((_plain(r) for r in expected), key=str), name
        assert zh["rows"] == en["rows"] and zh["label"] != en["label"]
        assert all(c["label"] for c in zh["columns"]) and zh["columns"] != en["columns"]
    # codes are served with their labels: channels, stages, categories
    eco = client.get("/api/reports/channel_economics", headers=auth(tokens.ops)).json()
    assert eco["value_labels"]["acquisition_channel"]["wecom"] == "企业微信"
    mig = client.get("/api/reports/lifecycle_migration?lang=en", headers=auth(tokens.ops)).json()
    assert mig["value_labels"]["from_stage"]["none"] == "not yet seen"
    assert client.get("/api/reports/nope", headers=auth(tokens.ops)).status_code == 404


def _plain(row) -> tuple:
    """A row's values as JSON carries them: numbers as floats, dates as ISO text."""
    return tuple(
        None
        if v is None
        else float(v)
        if isinstance(v, int | float | Decimal) and not isinstance(v, bool)
        else v
        if isinstance(v, bool)
        else str(v)
        for v in row
    )


def test_roles_follow_the_organisation(client, ops_ws, tokens):
    """A store manager works with their store's staff (the staff directory), and no one else's; staff and
    store managers open the profiles of their own members only; health tags reach only the roles allowed
    health data (a health manager: of members who consented), in profiles and in segment lists."""
    manager = auth(tokens.store_manager)
    store_staff = {
        r[0]
        for r in _sql(ops_ws, "select staff_id from dim_staff where store_id = ? and is_active", [STORE_ID])
    }
    queued = dict(
        _sql(ops_ws, "select staff_owner, count(*) from staff_queue where as_of = ? group by 1", [SCORE_DAY])
    )
    ours = store_staff & set(queued)
    assert STAFF_ID in ours and len(store_staff) >= 2
    mine = client.get("/api/queues", headers=manager).json()
    assert {r["key"] for r in mine["by_staff"]} == ours
    assert sum(r["queued"] for r in mine["by_segment"]) == sum(queued[s] for s in ours)
    other = client.get("/api/queues", headers=auth(tokens.other_store_manager)).json()
    assert other["by_staff"] and not {r["key"] for r in other["by_staff"]} & store_staff
    for staff in ours:  # their staff's queues, without health details
        body = client.get(f"/api/staff/{staff}/queue", headers=manager).json()
        assert body["total"] == queued[staff] and not any(i["health_details"] for i in body["items"])
    outsider = sorted(set(queued) - store_staff)[0]
    assert client.get(f"/api/staff/{outsider}/queue", headers=manager).status_code == 403
    owner_of = dict(_sql(ops_ws, "select member_id, staff_owner from dim_member"))
    foreign = next(m for m, s in sorted(owner_of.items()) if s and s not in store_staff)
    for who in (tokens.store_manager, tokens.staff, tokens.health_manager):
        assert client.get(f"/api/members/{foreign}", headers=auth(who)).status_code == 403
    colleague = next(m for m, s in sorted(owner_of.items()) if s in store_staff - {STAFF_ID})
    assert client.get(f"/api/members/{colleague}", headers=manager).status_code == 200
    assert client.get(f"/api/members/{colleague}", headers=auth(tokens.staff)).status_code == 403

    # health tags: STAFF_ID's members with some, one who consented to health data and one who did not
    with_health = _sql(
        ops_ws,
        "select d.member_id, d.health_data_consent, count(*) from dim_member as d "
        "inner join member_tags as t using (member_id) where d.staff_owner = ? and t.health_related "
        "group by all order by d.member_id",
        [STAFF_ID],
    )
    consented = next((m, n) for m, c, n in with_health if c)
    refused = next((m, n) for m, c, n in with_health if not c)

    def health_tags(token: str, member: str) -> tuple[int, int]:
        body = client.get(f"/api/members/{member}", headers=auth(token)).json()
        return sum(t["health_related"] for t in body["tags"]), body["health_tags_withheld"]

    assert health_tags(tokens.admin, refused[0]) == (refused[1], 0)  # admins see everything
    assert health_tags(tokens.health_manager, consented[0]) == (consented[1], 0)
    assert health_tags(tokens.health_manager, refused[0]) == (0, refused[1])  # no consent, no health tags
    for token in (tokens.ops, tokens.store_manager, tokens.staff):
        assert health_tags(token, consented[0]) == (0, consented[1])
    # ... and in a segment's member list: the admin's carries health interests, the ops view none of them
    health_values = {
        f"{g}:{v}"
        for g, v in _sql(ops_ws, "select distinct tag_group, tag_value from member_tags where health_related")
    }
    segment = _a_segment(ops_ws)
    url = f"/api/segments/{segment}/members?page_size=500"

    def listed(token: str) -> set[str]:
        return {t for r in client.get(url, headers=auth(token)).json()["items"] for t in r["tags"]}

    assert listed(tokens.admin) & health_values and not listed(tokens.ops) & health_values
