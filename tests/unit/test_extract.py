"""Extract against hand-made partitions: one row per way a channel export goes wrong."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from memberflow.core.contracts import get_contract
from memberflow.core.phones import phone_token
from memberflow.core.vault import ContactVault
from memberflow.extract import (
    MissingPartitionError,
    PartitionRefusedError,
    QuarantineThresholdError,
    SchemaDriftError,
    UnreadableFileError,
    extract_table,
    partition_dir,
    report_path,
)
from tests.support import TEST_ID_KEY, make_settings

DAY = date(2026, 3, 2)
PHONE = "135" + "0000" + "4321"
OTHER = "186" + "1111" + "2222"
FULL_WIDTH = str.maketrans("0123456789", "０１２３４５６７８９")
MEMBERS_HEADER = "card_no,mobile,store_id,join_time,birth_date,updated_at"


def write_partition(data_dir: Path, channel: str, table: str, name: str, payload: bytes | str) -> Path:
    folder = partition_dir(data_dir, channel, table, DAY)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(payload.encode("utf-8") if isinstance(payload, str) else payload)
    return path


def landed(settings, channel, table) -> list[dict]:
    """The staged partition: extract writes to the audit area; the landing gate publishes it."""
    return pq.read_table(
        partition_dir(settings.audit_dir, channel, table, DAY) / "part-0.parquet"
    ).to_pylist()


def quarantined(settings, channel, table) -> list[dict]:
    return pq.read_table(
        partition_dir(settings.quarantine_dir, channel, table, DAY) / "part-0.parquet"
    ).to_pylist()


@pytest.fixture
def lenient(tmp_path):
    """Settings that never fail on share, so each reason can be looked at."""
    return make_settings(tmp_path / "ws", tmp_path / "data", MEMBERFLOW_QUARANTINE_MAX_SHARE="1")


STORE_ORDERS = (
    "\n".join(
        [
            "store_id,receipt_no,card_no,order_time,amount_cny,pharmacist_consult",
            "S001,R1,C1,2026-03-02 10:00:00,89.00,true",  # 2 good
            "S001,,C1,2026-03-02 10:00:00,89.00,true",  # 3 missing receipt_no
            "S001,R3,C1,2026-03-02 25:61:00,89.00,true",  # 4 bad time
            "S001,R4,C1,2026-03-05 10:00:00,89.00,true",  # 5 future
            "S001,R5,C1,2026-03-02 10:00:00,12.3.4,true",  # 6 bad amount
            "S001,R6,C1,2026-03-02 10:00:00",  # 7 ragged
            "S001,R1,C1,2026-03-02 10:00:00,89.00,true",  # 8 exact repeat of line 2
            "S001,R8,C1,2026-03-02 11:00:00,50.00,false",  # 9 conflicting twins
            "S001,R8,C1,2026-03-02 11:00:00,55.00,false",  # 10
            "S001,R9,,2026-03-01 23:30:00,10.00,maybe",  # 11 bad bool
            "S001,R10,,2026-03-01 23:30:00,10.00,",  # 12 good (a day late, no card)
        ]
    )
    + "\n"
)


def test_every_csv_defect_is_quarantined_with_its_reason(lenient):
    body = STORE_ORDERS.encode() + "S001,R11,C9,2026-03-02 10:00:00,1.00,备注\n".encode("gbk")
    write_partition(lenient.data_dir, "store_pos", "orders", "part-0.csv", body)
    report = extract_table(lenient, get_contract("store_pos", "orders"), DAY)

    reasons = {(r["row_number"], r["reason"]) for r in quarantined(lenient, "store_pos", "orders")}
    assert reasons == {
        (3, "missing_required"),
        (4, "bad_time"),
        (5, "future_time"),
        (6, "bad_amount"),
        (7, "malformed_row"),
        (8, "duplicate_row"),
        (9, "duplicate_key_conflict"),
        (10, "duplicate_key_conflict"),
        (11, "bad_bool"),
        (13, "undecodable_bytes"),
    }
    rows = landed(lenient, "store_pos", "orders")
    assert [r["receipt_no"] for r in rows] == ["R1", "R10"]
    assert rows[0]["amount_cny"] == Decimal("89.00")
    assert rows[0]["order_time"] == datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
    assert rows[1]["local_date"] == date(2026, 3, 1)  # late row keeps its own local date
    assert rows[1]["_source_file"] == "store_pos/orders/dt=2026-03-02/part-0.csv"
    assert rows[1]["_row_number"] == 12
    assert rows[0]["_loaded_at"] == datetime(2026, 3, 1, 16, 0, tzinfo=UTC)
    assert (report.read, report.landed, report.quarantined) == (12, 2, 10)
    assert report.read == report.landed + report.quarantined
    saved = json.loads(report_path(lenient, "store_pos", "orders", DAY).read_text())
    assert saved["by_reason"]["duplicate_key_conflict"] == 2 and saved["status"] == "staged"


def test_negative_quantity(lenient):
    write_partition(
        lenient.data_dir,
        "store_pos",
        "order_items",
        "part-0.csv",
        "store_id,receipt_no,sku_id,category,qty,unit_price_cny\nS1,R1,K1,calcium,-1,89\nS1,R1,K2,calcium,2,89\n",
    )
    extract_table(lenient, get_contract("store_pos", "order_items"), DAY)
    assert [r["reason"] for r in quarantined(lenient, "store_pos", "order_items")] == ["negative_qty"]
    assert [r["qty"] for r in landed(lenient, "store_pos", "order_items")] == [2]


def test_jsonl_defects(lenient):
    good = {
        "event_id": "e1",
        "external_userid": "wm1",
        "chat_id": "c1",
        "event_type": "checkin",
        "checkin_topic": "walk",
        "event_time": "2026-03-02T07:00:00+08:00",
    }
    lines = [
        json.dumps(good),
        '{"event_id": "e2", "external_userid": ',  # truncated
        "[1, 2]",  # not an object
        json.dumps({k: v for k, v in good.items() if k != "chat_id"} | {"event_id": "e4"}),  # key absent
        json.dumps(good | {"event_id": "e5", "event_type": "dance"}),  # bad enum
        "",
    ]
    body = (
        "\n".join(lines).encode()
        + json.dumps(good | {"event_id": "e6", "checkin_topic": "走路"}, ensure_ascii=False).encode("gbk")
        + b"\n"
    )
    write_partition(lenient.data_dir, "wecom", "group_events", "part-0.jsonl", body)
    report = extract_table(lenient, get_contract("wecom", "group_events"), DAY)
    got = [(r["row_number"], r["reason"]) for r in quarantined(lenient, "wecom", "group_events")]
    assert got == [
        (2, "malformed_row"),
        (3, "malformed_row"),
        (4, "missing_required"),
        (5, "bad_enum"),
        (6, "undecodable_bytes"),
    ]
    assert [r["event_id"] for r in landed(lenient, "wecom", "group_events")] == ["e1"]
    assert report.read == 6


def test_json_lines_parsed_in_batches_keep_each_line_number_and_reason(lenient):
    # JSON lines are parsed JSONL_BATCH at a time; a batch with a bad line is read again line by line
    lines = [
        json.dumps(
            {
                "event_id": f"e{n}",
                "external_userid": f"wm{n}",
                "chat_id": n,  # a number: lands as its text
                "event_type": "checkin",
                "checkin_topic": None,
                "event_time": "2026-03-02 07:00:00",
            }
        )
        for n in range(1, 1201)
    ]
    lines[699] = lines[699][:30]  # truncated
    lines[1099] = lines[1099] + "," + lines[1098]  # two objects on one line
    write_partition(lenient.data_dir, "wecom", "group_events", "part-0.jsonl", "\n".join(lines) + "\n")
    report = extract_table(lenient, get_contract("wecom", "group_events"), DAY)
    got = [(r["row_number"], r["reason"]) for r in quarantined(lenient, "wecom", "group_events")]
    assert got == [(700, "malformed_row"), (1100, "malformed_row")]
    rows = landed(lenient, "wecom", "group_events")
    assert (report.read, report.landed) == (1200, 1198)
    assert [(r["_row_number"], r["event_id"], r["chat_id"]) for r in rows[698:700]] == [
        (699, "e699", "699"),
        (701, "e701", "701"),
    ]


def test_a_csv_line_of_other_blank_characters_is_a_row_not_a_blank_line(lenient):
    # blank lines (ASCII spaces) are skipped; a line holding only a control or no-break space is a bad row
    header, good = STORE_ORDERS.splitlines()[:2]
    body = "\n".join([header, good, "   ", "\x1c", "\u00a0"]) + "\n"
    write_partition(lenient.data_dir, "store_pos", "orders", "part-0.csv", body)
    report = extract_table(lenient, get_contract("store_pos", "orders"), DAY)
    got = [(r["row_number"], r["reason"]) for r in quarantined(lenient, "store_pos", "orders")]
    assert got == [(4, "malformed_row"), (5, "malformed_row")]
    assert (report.read, report.landed) == (3, 1)


def test_a_header_without_a_required_column_quarantines_every_row(lenient):
    write_partition(
        lenient.data_dir,
        "store_pos",
        "order_items",
        "part-0.csv",
        "store_id,receipt_no,sku_id,qty,unit_price_cny\nS1,R1,K1,1,89\nS1,R2,K1,1,89\n",
    )
    report = extract_table(lenient, get_contract("store_pos", "order_items"), DAY)
    rows = quarantined(lenient, "store_pos", "order_items")
    assert {r["reason"] for r in rows} == {"missing_required"} and len(rows) == 2
    assert "category" in rows[0]["detail"]
    assert report.landed == 0


def test_phones_become_tokens_and_go_only_to_the_vault(lenient):
    lines = [
        "card_no,mobile,store_id,join_time,birth_date,updated_at",
        f"C1,+86 {PHONE[:3]} {PHONE[3:7]} {PHONE[7:]},S1,2026-03-02 09:00:00,1970-05-01,2026-03-02 09:00:00",
        f"C2,{OTHER.translate(FULL_WIDTH)},S1,2026-03-02 09:00:00,,2026-03-02 09:00:00",
        "C3,12345,S1,2026-03-02 09:00:00,,2026-03-02 09:00:00",
    ]
    write_partition(lenient.data_dir, "store_pos", "members", "part-0.csv", "\n".join(lines) + "\n")
    report = extract_table(lenient, get_contract("store_pos", "members"), DAY)
    rows = landed(lenient, "store_pos", "members")
    key = TEST_ID_KEY.encode()
    assert [r["phone_token"] for r in rows] == [phone_token(PHONE, key), phone_token(OTHER, key), None]
    assert rows[0]["phone_masked"] == "135****4321"
    assert "mobile" not in rows[0]
    assert report.invalid_phones == 1
    vault = pq.read_table(partition_dir(lenient.vault_dir, "store_pos", "members", DAY) / "part-0.parquet")
    opened = {
        t: ContactVault(lenient.vault_key()).open(s)
        for t, s in zip(vault["phone_token"].to_pylist(), vault["phone_sealed"].to_pylist(), strict=True)
    }
    assert opened == {phone_token(PHONE, key): PHONE, phone_token(OTHER, key): OTHER}
    for folder in (
        lenient.audit_dir,
        lenient.landing_dir,
        lenient.vault_dir,
        lenient.quarantine_dir,
        lenient.reports_dir,
    ):
        for path in folder.rglob("*"):
            if path.is_file():
                assert PHONE.encode() not in path.read_bytes() and OTHER.encode() not in path.read_bytes()


def test_consent_ids_land_in_the_form_one_id_keys_them_by_or_are_quarantined(lenient):
    base = {"scope": "marketing", "granted": "false", "event_time": "2026-03-02 12:00:00", "source": "sms"}
    lines = [
        json.dumps(base | {"event_id": "c1", "id_type": "mobile", "id_value": f"0086{PHONE}"}),
        json.dumps(base | {"event_id": "c2", "id_type": "mobile", "id_value": "4000-123-456"}),
        json.dumps(base | {"event_id": "c3", "id_type": "card_no", "id_value": "C1"}),
        # an opt-out by openid must name the mini-program it came from, as One ID keys openids
        json.dumps(
            base | {"event_id": "c4", "id_type": "openid", "id_value": "o6_bmjrPTlm6_2sgVt7hMZOPfL2M"}
        ),
        json.dumps(base | {"event_id": "c5", "id_type": "openid", "id_value": "wechat:wx8a1b:o6_bmjrPTlm6"}),
        # a livestream viewer, as One ID keys them (the member behind can be reached on other channels)
        json.dumps(
            base | {"event_id": "c6", "id_type": "openid", "id_value": "wechat_channels:live:lv496dea74c6"}
        ),
    ]
    write_partition(lenient.data_dir, "consent", "events", "part-0.jsonl", "\n".join(lines) + "\n")
    extract_table(lenient, get_contract("consent", "events"), DAY)
    rows = landed(lenient, "consent", "events")
    assert [(r["id_type"], r["id_value"]) for r in rows] == [
        ("phone_token", phone_token(PHONE, TEST_ID_KEY.encode())),
        ("card_no", "C1"),
        ("openid", "wechat:wx8a1b:o6_bmjrPTlm6"),
        ("openid", "wechat_channels:live:lv496dea74c6"),
    ]
    bad = quarantined(lenient, "consent", "events")
    assert [r["reason"] for r in bad] == ["bad_phone", "bad_id"]
    assert "platform:app_id:openid" in bad[1]["detail"]


def test_parquet_partner_file(lenient):
    token = phone_token(PHONE, TEST_ID_KEY.encode())
    table = pa.table(
        {
            "partner": ["p", "p"],
            "policy_id": ["1", "2"],
            "holder_mobile_hmac": [token.upper(), "not-a-token"],
            "product_code": ["X", "X"],
            "start_date": [date(2026, 3, 2)] * 2,
            "end_date": [None, None],
            "status": ["active"] * 2,
            "updated_at": [datetime(2026, 3, 2, 9, 0)] * 2,
        }
    )
    folder = partition_dir(lenient.data_dir, "insurance", "policies", DAY)
    folder.mkdir(parents=True)
    pq.write_table(table, folder / "part-0.parquet")
    extract_table(lenient, get_contract("insurance", "policies"), DAY)
    rows = landed(lenient, "insurance", "policies")
    assert [r["holder_mobile_hmac"] for r in rows] == [token]
    assert rows[0]["updated_at"] == datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
    assert [r["reason"] for r in quarantined(lenient, "insurance", "policies")] == ["bad_token"]


def test_missing_partition_is_a_named_condition(settings):
    with pytest.raises(MissingPartitionError, match=r"wecom\.contacts: no partition for 2026-03-02"):
        extract_table(settings, get_contract("wecom", "contacts"), DAY)


def test_too_many_bad_rows_fail_and_land_nothing(tmp_path):
    settings = make_settings(
        tmp_path / "ws",
        tmp_path / "data",
        MEMBERFLOW_QUARANTINE_LIMITS="store_pos.orders=0.2",
        MEMBERFLOW_QUARANTINE_MIN_ROWS="3",
    )
    write_partition(
        settings.data_dir,
        "store_pos",
        "orders",
        "part-0.csv",
        "store_id,receipt_no,card_no,order_time,amount_cny,pharmacist_consult\n"
        "S1,R1,,2026-03-02 10:00:00,1.00,\n",
    )
    contract = get_contract("store_pos", "orders")
    extract_table(settings, contract, DAY)
    assert len(landed(settings, "store_pos", "orders")) == 1
    write_partition(settings.data_dir, "store_pos", "orders", "part-0.csv", STORE_ORDERS)
    with pytest.raises(QuarantineThresholdError) as info:
        extract_table(settings, contract, DAY)
    message = str(info.value)
    assert "store_pos.orders 2026-03-02: 9 of 11 rows quarantined" in message
    assert "limit of 20.0%" in message and "duplicate_key_conflict 2" in message
    assert not partition_dir(settings.audit_dir, "store_pos", "orders", DAY).exists()
    assert len(quarantined(settings, "store_pos", "orders")) == 9
    assert json.loads(report_path(settings, "store_pos", "orders", DAY).read_text())["status"] == "failed"


def test_a_few_bad_rows_on_a_quiet_day_do_not_fail(tmp_path):
    settings = make_settings(tmp_path / "ws", tmp_path / "data")  # 5 % share, at least 10 rows
    write_partition(settings.data_dir, "store_pos", "orders", "part-0.csv", STORE_ORDERS)
    report = extract_table(settings, get_contract("store_pos", "orders"), DAY)
    assert report.quarantined == 9 and report.status == "staged"


def _digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "secrets" not in p.parts
    }


def test_rerunning_a_date_gives_identical_files(lenient):
    write_partition(lenient.data_dir, "store_pos", "orders", "part-0.csv", STORE_ORDERS)
    write_partition(
        lenient.data_dir,
        "store_pos",
        "members",
        "part-0.csv",
        f"{MEMBERS_HEADER}\nC1,{PHONE},S1,2026-03-02 09:00:00,,2026-03-02 09:00:00\n",
    )
    for table in ("orders", "members"):
        extract_table(lenient, get_contract("store_pos", table), DAY)
    first = _digest(lenient.home)
    for table in ("orders", "members"):
        extract_table(lenient, get_contract("store_pos", table), DAY)
    assert _digest(lenient.home) == first
    assert (
        len(first) == 9
    )  # staged ×2, quarantine ×2, reports ×2, vault (members only), keys.json, workspace-id


def test_every_file_of_a_partition_is_read_or_refused_with_a_reason(lenient):
    # A channel's second export comes upper-case or gzipped; a zip and a note sit beside.
    header, first, late = (
        STORE_ORDERS.splitlines()[0],
        STORE_ORDERS.splitlines()[1],
        STORE_ORDERS.splitlines()[-1],
    )
    write_partition(lenient.data_dir, "store_pos", "orders", "part-0.csv", f"{header}\n{first}\n")
    write_partition(lenient.data_dir, "store_pos", "orders", "part-1.CSV", f"{header}\n{late}\n")
    second = (
        f"{header}\nS001,R20,C2,2026-03-02 12:00:00,20.00,false\nS001,R21,C2,2026-03-02 12:30:00,21.00,\n"
    )
    write_partition(lenient.data_dir, "store_pos", "orders", "part-2.csv.gz", gzip.compress(second.encode()))
    jsonl = (
        json.dumps(
            {
                "store_id": "S001",
                "receipt_no": "R30",
                "order_time": "2026-03-02 13:00:00",
                "amount_cny": "30.00",
            }
        )
        + "\n"
    )
    write_partition(lenient.data_dir, "store_pos", "orders", "part-3.JSONL.GZ", gzip.compress(jsonl.encode()))
    write_partition(lenient.data_dir, "store_pos", "orders", "part-4.zip", b"PK\x03\x04")
    write_partition(lenient.data_dir, "store_pos", "orders", "README.txt", "exported by the POS")

    report = extract_table(lenient, get_contract("store_pos", "orders"), DAY)
    receipts = sorted(row["receipt_no"] for row in landed(lenient, "store_pos", "orders"))
    assert receipts == ["R1", "R10", "R20", "R21", "R30"]
    assert len(report.files) == 4 and report.read == report.landed == 5
    refused = {Path(name).name: reason for name, reason in report.refused_files.items()}
    assert set(refused) == {"part-4.zip", "README.txt"}
    assert "gzip" in refused["part-4.zip"] and ".csv" in refused["README.txt"]


def test_a_missing_or_wrong_data_folder_stops_build_with_what_to_set(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from memberflow.cli import app

    monkeypatch.setenv("MEMBERFLOW_HOME", str(tmp_path / "ws"))
    monkeypatch.setenv("MEMBERFLOW_ID_KEY", TEST_ID_KEY)
    (tmp_path / "exports").mkdir()  # a folder, but not one the channels deliver to
    for folder in (tmp_path / "nowhere", tmp_path / "exports"):
        result = CliRunner().invoke(app, ["build", "--data-dir", str(folder)])
        assert result.exit_code == 2, result.output
        assert str(folder) in result.output and "MEMBERFLOW_DATA_DIR" in result.output
    assert not (tmp_path / "ws" / "warehouse.duckdb").exists()


def test_a_second_landing_run_in_one_workspace_stops_with_a_lock_message(tmp_path, monkeypatch):
    # Two builds at once extracted the same partitions and one failed with "nothing staged".
    from typer.testing import CliRunner

    from memberflow.cli import app
    from memberflow.warehouse import landing_lock

    settings = make_settings(tmp_path / "ws", tmp_path / "data")
    write_partition(settings.data_dir, "store_pos", "orders", "part-0.csv", STORE_ORDERS)
    monkeypatch.setenv("MEMBERFLOW_HOME", str(settings.home))
    monkeypatch.setenv("MEMBERFLOW_ID_KEY", TEST_ID_KEY)
    commands = (
        ["build", "--data-dir", str(settings.data_dir)],
        ["extract", "--date", DAY.isoformat(), "--data-dir", str(settings.data_dir)],
    )
    with landing_lock(settings, "memberflow build"):  # the first build, still landing
        for command in commands:
            result = CliRunner().invoke(app, command)
            assert result.exit_code == 75, result.output
            assert "memberflow build" in result.output and f"pid {os.getpid()}" in result.output
    assert not (settings.audit_dir / "store_pos").exists()  # the second run touched nothing
    # an Airflow extract run's table tasks share the lock with each other, not with a command-line run
    from memberflow.warehouse import WorkspaceBusy

    with landing_lock(settings, "task", shared=True), landing_lock(settings, "task", shared=True):
        result = CliRunner().invoke(app, commands[1])
        assert result.exit_code == 75 and "Airflow extract_channels" in result.output, result.output
    with (
        landing_lock(settings, "memberflow build"),
        pytest.raises(WorkspaceBusy, match="memberflow build"),
        landing_lock(settings, "Airflow extract_channels", shared=True),
    ):
        pass


def test_a_file_added_to_a_landed_day_is_picked_up_by_the_next_build(tmp_path):
    # An opt-out arrives in a second file after its day was landed: build must land it, not skip the day.
    from memberflow.extract import pending_partitions
    from memberflow.pipeline import land_pending

    settings = make_settings(tmp_path / "ws", tmp_path / "data")
    base = {"scope": "marketing", "event_time": "2026-03-02 12:00:00", "source": "app"}
    first = json.dumps(base | {"event_id": "c1", "id_type": "card_no", "id_value": "C1", "granted": "true"})
    write_partition(settings.data_dir, "consent", "events", "part-0.jsonl", first + "\n")
    assert land_pending(settings, settings.data_dir).published == 1
    assert pending_partitions(settings, settings.data_dir) == []  # nothing new: nothing to do

    late = json.dumps(base | {"event_id": "c2", "id_type": "card_no", "id_value": "C1", "granted": "false"})
    write_partition(settings.data_dir, "consent", "events", "part-1.jsonl", late + "\n")
    assert [(d, c.name) for d, c in pending_partitions(settings, settings.data_dir)] == [
        (DAY, "consent.events")
    ]
    assert land_pending(settings, settings.data_dir).published == 1
    published = pq.read_table(partition_dir(settings.landing_dir, "consent", "events", DAY)).to_pylist()
    assert sorted((r["event_id"], r["granted"]) for r in published) == [("c1", True), ("c2", False)]
    assert pending_partitions(settings, settings.data_dir) == []


def test_a_phone_in_any_other_column_is_tokenized_or_masked_and_counted(lenient):
    # A store typing the member's phone as the card number, an agent noting the caller's number in free text.
    dotted = f"{OTHER[:3]}.{OTHER[3:7]}.{OTHER[7:]}"
    lines = [MEMBERS_HEADER, f"{dotted},{PHONE},S1,2026-03-02 09:00:00,,2026-03-02 09:00:00"]
    write_partition(lenient.data_dir, "store_pos", "members", "part-0.csv", "\n".join(lines) + "\n")
    members = extract_table(lenient, get_contract("store_pos", "members"), DAY)
    base = {"event_time": "2026-03-02 12:00:00", "scope": "marketing", "granted": "false"}
    event = base | {
        "event_id": "c1",
        "id_type": "card_no",
        "id_value": "C7",
        "source": f"客服来电 ({PHONE[:3]}){PHONE[3:]}",
    }
    write_partition(lenient.data_dir, "consent", "events", "part-0.jsonl", json.dumps(event) + "\n")
    consent = extract_table(lenient, get_contract("consent", "events"), DAY)

    key = TEST_ID_KEY.encode()
    # an identifier that is a phone is keyed by the phone's token (the same person's card stays one card)
    assert [r["card_no"] for r in landed(lenient, "store_pos", "members")] == [phone_token(OTHER, key)]
    # free text keeps its words, the number masked as ops may see it
    assert [r["source"] for r in landed(lenient, "consent", "events")] == ["客服来电 135****4321"]
    assert (members.phones_hidden, consent.phones_hidden) == (1, 1)
    for path in lenient.home.rglob("*"):
        if path.is_file() and "secrets" not in path.parts:
            assert PHONE.encode() not in path.read_bytes() and OTHER.encode() not in path.read_bytes(), path


@pytest.mark.parametrize(
    ("rows", "bad", "fails"),
    [
        (164, 10, False),  # 6 % of a small day: what a 5 % error rate gives by chance (generate's defaults)
        (164, 40, True),  # a quarter of it broken: not chance
        (4000, 280, True),  # 7 % of a big day is a real excess, however it is counted
    ],
)
def test_the_quarantine_limit_allows_for_chance_on_small_partitions(tmp_path, rows, bad, fails):
    settings = make_settings(tmp_path / "ws", tmp_path / "data")  # 5 % share, at least 10 rows
    header = STORE_ORDERS.splitlines()[0]
    lines = [f"S001,R{i},C1,2026-03-02 10:00:00,{'12.3.4' if i < bad else '89.00'},true" for i in range(rows)]
    write_partition(
        settings.data_dir, "store_pos", "orders", "part-0.csv", "\n".join([header, *lines]) + "\n"
    )
    if not fails:
        assert extract_table(settings, get_contract("store_pos", "orders"), DAY).status == "staged"
        return
    with pytest.raises(QuarantineThresholdError) as info:
        extract_table(settings, get_contract("store_pos", "orders"), DAY)
    assert f"{bad} of {rows} rows quarantined" in str(info.value)
    assert "MEMBERFLOW_QUARANTINE_LIMITS" in str(info.value)  # the setting to change, if it is expected


def test_an_oversize_field_and_an_unbalanced_quote_quarantine_only_their_own_lines(lenient):
    header = STORE_ORDERS.splitlines()[0]
    good = [f"S001,R{i},C1,2026-03-02 10:00:00,{i}.00,true" for i in range(100, 126)]
    oversize = "S001,R900,C1,2026-03-02 10:00:00,1.00," + "x" * 1_000_000
    stray_quote = 'S001,R901,"C1,2026-03-02 10:00:00,1.00,true'  # a quote opened and never closed
    rows = [header, good[0], oversize, good[1], stray_quote, *good[2:]]
    write_partition(lenient.data_dir, "store_pos", "orders", "part-0.csv", "\n".join(rows) + "\n")
    report = extract_table(lenient, get_contract("store_pos", "orders"), DAY)
    assert sorted(r["receipt_no"] for r in landed(lenient, "store_pos", "orders")) == sorted(
        f"R{i}" for i in range(100, 126)
    )
    bad = {r["row_number"]: r for r in quarantined(lenient, "store_pos", "orders")}
    assert set(bad) == {3, 5} and report.read == report.landed + report.quarantined == 28
    assert "bytes" in bad[3]["detail"] and len(bad[3]["raw"]) < 2000  # the raw row is cut, not stored whole
    assert "quote" in bad[5]["detail"]
    # JSON lines have the same bound per line
    event = {
        "scope": "marketing",
        "granted": "false",
        "event_time": "2026-03-02 12:00:00",
        "id_type": "card_no",
    }
    lines = [
        json.dumps(event | {"event_id": f"c{i}", "id_value": f"C{i}", "source": "app"}) for i in range(3)
    ]
    lines.insert(1, json.dumps(event | {"event_id": "c9", "id_value": "C9", "source": "x" * 1_000_000}))
    write_partition(lenient.data_dir, "consent", "events", "part-0.jsonl", "\n".join(lines) + "\n")
    report = extract_table(lenient, get_contract("consent", "events"), DAY)
    assert sorted(r["event_id"] for r in landed(lenient, "consent", "events")) == ["c0", "c1", "c2"]
    (bad,) = quarantined(lenient, "consent", "events")
    assert bad["row_number"] == 2 and "bytes" in bad["detail"] and len(bad["raw"]) < 2000


def test_a_corrupt_file_or_a_renamed_column_fails_the_table_naming_it(lenient):
    write_partition(lenient.data_dir, "store_pos", "orders", "part-0.parquet", b"PAR1 not really parquet")
    write_partition(lenient.data_dir, "store_pos", "orders", "part-1.csv.gz", b"\x1f\x8b not really gzip")
    with pytest.raises(UnreadableFileError, match="unreadable Parquet") as info:
        extract_table(lenient, get_contract("store_pos", "orders"), DAY)
    assert "part-1.csv.gz (unreadable gzip" in str(info.value)  # every unreadable file named
    assert not partition_dir(lenient.audit_dir, "store_pos", "orders", DAY).exists()  # nothing to publish
    # the files are kept in the quarantine as rows 0, for whoever inspects it
    assert {r["row_number"] for r in quarantined(lenient, "store_pos", "orders")} == {0}

    # the channel renamed an optional column: its values would silently land as nulls
    lines = [
        "external_userid,unionid,staff_userid,add_time,remark_phone,updated_at",
        f"wm1,,S1,2026-03-02 09:00:00,{PHONE},2026-03-02 09:00:00",
    ]
    write_partition(lenient.data_dir, "wecom", "contacts", "part-0.csv", "\n".join(lines) + "\n")
    with pytest.raises(SchemaDriftError) as info:
        extract_table(lenient, get_contract("wecom", "contacts"), DAY)
    assert "remark_phone" in str(info.value) and "remark_mobile" in str(info.value)
    assert PHONE not in str(info.value)


FIELD = st.text(alphabet=[*'ab19 ,"\t;-:.', "１", "é"], max_size=12)
LINE = st.one_of(
    st.lists(FIELD, min_size=0, max_size=9).map(lambda fields: ",".join(fields).encode("utf-8")),
    st.binary(max_size=30).map(lambda raw: raw.replace(b"\n", b"").replace(b"\r", b"")),
)


@hypothesis_settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(lines=st.lists(LINE, max_size=25))
def test_fuzzed_exports_never_crash_and_account_for_every_row(tmp_path, lines):
    """Whatever bytes a channel sends: no traceback, every row landed or quarantined with a reason, each
    from its own physical line; without quotes, one row per non-blank line."""
    workspace = make_settings(tmp_path / f"ws{len(list(tmp_path.iterdir()))}", tmp_path / "data")
    header = STORE_ORDERS.splitlines()[0].encode()
    payload = b"\n".join([header, *lines]) + b"\n"
    folder = partition_dir(workspace.data_dir, "store_pos", "orders", DAY)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "part-0.csv").write_bytes(payload)
    try:
        report = extract_table(workspace, get_contract("store_pos", "orders"), DAY)
    except PartitionRefusedError:
        return  # refused as a whole, with a message: an accepted outcome
    assert report.read == report.landed + report.quarantined
    numbers = [r["_row_number"] for r in landed(workspace, "store_pos", "orders")]
    numbers += [r["row_number"] for r in quarantined(workspace, "store_pos", "orders")]
    assert len(numbers) == len(set(numbers)) and all(2 <= n <= len(lines) + 1 for n in numbers)
    if b'"' not in payload:
        assert report.read == sum(1 for line in lines if line.strip())
