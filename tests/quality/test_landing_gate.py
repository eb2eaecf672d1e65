"""The landing gate on clean generated data and on the defects it guards against.

Every test works on a private copy of a workspace where 60 days were landed (each partition through the
gate), plants a defect in the channel's source files for the last day, and lands that day again.
"""

from __future__ import annotations

import json
import shutil
from datetime import date, timedelta

import pyarrow.parquet as pq
import pytest

from expectations.config import QualityConfig
from expectations.landing import audit_and_publish
from expectations.runner import QualityGateError, load_results
from memberflow.core.contracts import CONTRACTS, get_contract
from memberflow.extract import extract_table, partition_dir, read_report
from tests.support import DAYS, START, make_settings

DAY = START + timedelta(days=DAYS - 1)


def reland(settings, table: str, day=DAY, config=None):
    contract = get_contract(*table.split("."))
    extract_table(settings, contract, day, settings.data_dir)
    return audit_and_publish(settings, contract, day, config)


def source(settings, table: str, day=DAY):
    channel, name = table.split(".")
    return next(partition_dir(settings.data_dir, channel, name, day).glob("part-0.*"))


def to_fen(path) -> None:
    """The export switched units: every amount_cny of the CSV file 100 times too large."""
    header, *rows = path.read_text().splitlines()
    position = header.split(",").index("amount_cny")
    scaled = []
    for row in rows:
        fields = row.split(",")
        fields[position] = f"{float(fields[position]) * 100:.2f}"
        scaled.append(",".join(fields))
    path.write_text("\n".join([header, *scaled]) + "\n")


def landed_rows(settings, table: str, day=DAY) -> int:
    channel, name = table.split(".")
    return pq.read_metadata(
        partition_dir(settings.landing_dir, channel, name, day) / "part-0.parquet"
    ).num_rows


def test_clean_data_passes_every_landing_suite(built):
    """The fixture landed 60 days of every table through the gate; every result is on disk and passing."""
    results = [r for d in range(DAYS) for r in load_results(built, "landing", START + timedelta(days=d))]
    assert len(results) == DAYS * len(CONTRACTS)
    assert {r.status for r in results} == {"passed"}
    volume_checked = [r for r in results if any(f.check == "volume" for f in r.findings)]
    assert len(volume_checked) >= 40  # the busy tables, once their trailing median passes 100 rows
    assert all(
        read_report(built, get_contract(*r.subject.split(".")), DAY)["status"] == "ok" for r in results[-12:]
    )


def test_relanding_an_unchanged_day_passes(workspace_copy):
    result = reland(workspace_copy, "wecom.group_events")
    assert result.ok and result.status == "passed"
    checks = {f.check for f in result.suites[0].findings}
    assert {"volume", "keys_not_landed_before", "key_unique", "times_in_range", "enum_values"} <= checks


def test_half_a_channels_rows_dropped_fails_on_volume(workspace_copy):
    table = "wecom.group_events"
    before = landed_rows(workspace_copy, table)
    path = source(workspace_copy, table)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[::2]) + "\n")
    with pytest.raises(QualityGateError) as info:
        reland(workspace_copy, table)
    message = str(info.value)
    assert "wecom.group_events 2026-03-01" in message
    assert "expect_table_row_count_to_be_between" in message and "[volume, critical]" in message
    report = read_report(workspace_copy, get_contract("wecom", "group_events"), DAY)
    assert report["landed"] <= len(lines[::2]) and f"observed {report['landed']}" in message
    # the partition stayed in the audit area; the published one is untouched and the report says why
    assert landed_rows(workspace_copy, table) == before
    assert report["status"] == "rejected" and "volume" in report["message"]


def test_amounts_in_fen_fail_on_the_median_and_the_range(workspace_copy):
    table = "ecommerce.orders"
    to_fen(source(workspace_copy, table))
    with pytest.raises(QualityGateError) as info:
        reland(workspace_copy, table)
    message = str(info.value)
    assert "ecommerce.orders 2026-03-01" in message
    assert "expect_column_median_to_be_between(amount_cny) [amount_median, critical]" in message
    assert "expect_column_values_to_be_between(amount_cny) [amount_range, critical]" in message
    result = info.value.result.suites[0]
    median = next(f for f in result.failures if f.check == "amount_median")
    assert float(median.observed) > 3000
    spread = next(f for f in result.failures if f.check == "amount_range")
    assert spread.samples and {"platform", "order_id", "amount_cny"} <= set(spread.samples[0])
    with open(result.result_path) as handle:
        saved = json.load(handle)
    assert saved["status"] == "failed" and any(f["check"] == "amount_median" for f in saved["findings"])
    assert (
        workspace_copy.quality_dir / "results" / "landing" / "dt=2026-03-01" / "ecommerce.orders.gx.json"
    ).exists()


def test_a_day_sent_again_under_the_next_date_fails_on_keys_landed_before(workspace_copy):
    table = "wecom.group_events"
    next_day = DAY + timedelta(days=1)
    target = source(workspace_copy, table).parent.with_name(f"dt={next_day.isoformat()}")
    shutil.copytree(source(workspace_copy, table).parent, target)
    with pytest.raises(QualityGateError) as info:
        reland(workspace_copy, table, next_day)
    message = str(info.value)
    assert "wecom.group_events 2026-03-02" in message
    assert (
        "expect_column_values_to_be_in_set(_key_landed_before) [keys_not_landed_before, critical]" in message
    )
    assert "(100.00%)" in message
    assert not partition_dir(workspace_copy.landing_dir, "wecom", "group_events", next_day).exists()


def test_a_warning_is_recorded_and_the_partition_published(workspace_copy, tmp_path):
    override = tmp_path / "quality.yml"
    override.write_text("landing:\n  tables:\n    wecom.group_events:\n      volume: {severity: warning}\n")
    table = "wecom.group_events"
    path = source(workspace_copy, table)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[::2]) + "\n")
    result = reland(workspace_copy, table, config=QualityConfig.load(override))
    assert result.ok and result.status == "warning"
    assert "[volume, warning]" in result.messages("warning")[0]
    report = read_report(workspace_copy, get_contract("wecom", "group_events"), DAY)
    assert report["status"] == "ok" and report["quality"] == "warning"
    assert landed_rows(workspace_copy, table) == report["landed"] < len(lines) // 2 + 1


def test_a_volume_drop_in_a_tables_first_weeks_is_a_warning(workspace_copy, tmp_path):
    """A go-live backfill starts with the back catalogue and a new channel ramps up: until a table has
    warmup_days earlier partitions, a volume finding is published with a warning, not refused."""
    table = "wecom.group_events"
    early = START + timedelta(days=20)  # 20 earlier partitions, fewer than the 28 of warmup_days
    path = source(workspace_copy, table, early)
    lines = path.read_bytes().splitlines()  # bytes: a row may carry the sample's undecodable bytes
    path.write_bytes(b"\n".join([lines[0], *lines[1::5]]) + b"\n")  # four rows in five lost
    override = tmp_path / "quality.yml"  # the sample's early days are small: check them anyway
    override.write_text("landing:\n  checks:\n    volume: {min_median_rows: 10}\n")
    result = reland(workspace_copy, table, early, QualityConfig.load(override))
    assert result.ok and result.status == "warning"
    assert "[volume, warning]" in result.messages("warning")[0]
    assert any("warms up: 20 of 28 days" in note for note in result.suites[0].notes)
    assert landed_rows(workspace_copy, table, early) <= len(lines) // 5 + 1


@pytest.mark.parametrize("batch_days", [31, 3], ids=["one batch", "two batches"])
def test_a_batch_of_days_is_judged_day_by_day(workspace_copy, monkeypatch, batch_days):
    """Five days of one table landed (for the first time) in one batch, one GX run, or in two: a day in fen
    and a day that re-sends the day before fail on their own; the other three are published, each result
    counted on its own rows. In two batches the re-sent day's original is in the other batch: it counts."""
    from memberflow.pipeline import land_days

    monkeypatch.setattr("expectations.landing.BATCH_DAYS", batch_days)

    table, contract = "ecommerce.orders", get_contract("ecommerce", "orders")
    days = [DAY - timedelta(days=n) for n in range(4, -1, -1)]
    fen, resent = days[1], days[3]
    to_fen(source(workspace_copy, table, fen))
    shutil.copyfile(source(workspace_copy, table, days[2]), source(workspace_copy, table, resent))
    for day in days:  # landed for the first time, as in a backfill: the run alone knows the days' keys
        shutil.rmtree(partition_dir(workspace_copy.landing_dir, "ecommerce", "orders", day))

    run = land_days(workspace_copy, days, workspace_copy.data_dir, [contract])
    assert set(run.errors) == {f"{table} {fen.isoformat()}", f"{table} {resent.isoformat()}"}
    assert "[amount_median, critical]" in run.errors[f"{table} {fen.isoformat()}"]
    assert "[keys_not_landed_before, critical]" in run.errors[f"{table} {resent.isoformat()}"]
    statuses = {day: read_report(workspace_copy, contract, day)["status"] for day in days}
    assert statuses == {d: "rejected" if d in (fen, resent) else "ok" for d in days}

    results = {day: load_results(workspace_copy, "landing", day) for day in days}
    for day in days:
        (result,) = [r for r in results[day] if r.subject == table]
        assert result.rows == read_report(workspace_copy, contract, day)["landed"]
        findings = {f.check: f for f in result.findings}
        spread = findings["amount_range"]
        if day == fen:
            unexpected = int(spread.observed.split(" of ")[0].replace(",", ""))
            assert not spread.success and 0 < unexpected <= result.rows
            assert f" of {result.rows:,} rows" in spread.observed
            assert spread.samples and {"order_id", "amount_cny"} <= set(spread.samples[0])
        else:
            assert spread.success and spread.observed.startswith("0 of")
        # the re-sent day's keys come from an earlier day of the run, which itself passed
        assert findings["keys_not_landed_before"].success is (day != resent)


def test_a_wave_of_opt_outs_beside_bad_rows_and_resent_events_lands(workspace_copy, tmp_path):
    """Consent is never held back as a whole: a day with three times the usual opt-outs, a third of its rows
    broken and yesterday's events sent again lands every valid row (the volume and re-sent-keys findings
    are warnings for this table, and its quarantine share has no limit)."""
    path = source(workspace_copy, "consent.events")
    events = [json.loads(line) for line in path.read_text().splitlines()]
    wave = [e | {"event_id": f"{e['event_id']}-wave{n}", "granted": False} for n in (1, 2) for e in events]
    resent = [
        json.loads(line) for line in source(workspace_copy, "consent.events", DAY - timedelta(1)).open()
    ]
    broken = [
        e | {"event_id": f"broken-{i}", "scope": "marketing_calls"} for i, e in enumerate(events + wave)
    ]
    rows = events + wave + resent + broken[: len(events + wave + resent) // 2]
    path.write_text("".join(json.dumps(e) + "\n" for e in rows))
    override = tmp_path / "quality.yml"  # the sample's consent days are small: check their volume anyway
    override.write_text("landing:\n  checks:\n    volume: {min_median_rows: 5, warmup_days: 0}\n")
    result = reland(workspace_copy, "consent.events", config=QualityConfig.load(override))
    assert result.ok, result.messages()
    warned = {f.check for f in result.suites[0].failures}
    assert {"volume", "keys_not_landed_before"} <= warned
    report = read_report(workspace_copy, get_contract("consent", "events"), DAY)
    assert report["status"] == "ok" and report["quarantined"] >= len(rows) // 4
    assert landed_rows(workspace_copy, "consent.events") == report["landed"] >= len(events + wave)


def test_history_before_the_business_start_fails_naming_the_setting(tmp_path):
    # Real exports from 1997: the times are fine for extract, but before the configured business start.
    settings = make_settings(tmp_path / "ws", tmp_path / "data")
    day = date(1997, 6, 1)
    folder = partition_dir(settings.data_dir, "consent", "events", day)
    folder.mkdir(parents=True)
    event = {
        "event_id": "c1",
        "id_type": "card_no",
        "id_value": "C1",
        "scope": "marketing",
        "granted": "true",
    }
    (folder / "part-0.jsonl").write_text(json.dumps(event | {"event_time": "1997-06-01 10:00:00"}) + "\n")
    contract = get_contract("consent", "events")
    extract_table(settings, contract, day)
    with pytest.raises(QualityGateError) as info:
        audit_and_publish(settings, contract, day)
    assert "[times_in_range, critical]" in str(info.value)
    assert "business start (2015-01-01, the quality config's times_in_range.business_start)" in str(
        info.value
    )


def test_a_backfill_lands_the_same_in_parallel_processes(workspace_copy, tmp_path, monkeypatch):
    """Two days of every table landed again by two processes (as a backfill is) give what one process gives:
    the same partitions published with the same rows, the same day refused (orders in fen) with the same
    reason, the same reports and quarantine."""
    import dataclasses

    from memberflow import pipeline

    monkeypatch.setattr(pipeline, "PARALLEL_FROM", 2)  # a real backfill starts at 60 partitions
    days = [DAY - timedelta(days=1), DAY]
    to_fen(source(workspace_copy, "ecommerce.orders", DAY))
    serial = dataclasses.replace(
        make_settings(tmp_path / "serial", workspace_copy.data_dir), landing_workers=1
    )
    shutil.copytree(workspace_copy.home, serial.home)
    parallel = dataclasses.replace(workspace_copy, landing_workers=2)

    runs = {name: pipeline.land_days(s, days) for name, s in (("serial", serial), ("parallel", parallel))}
    errors = {
        name: {k: v.replace(str(s.home), "") for k, v in runs[name].errors.items()}
        for name, s in (("serial", serial), ("parallel", parallel))
    }
    assert errors["parallel"] == errors["serial"]
    assert list(errors["serial"]) == [f"ecommerce.orders {DAY.isoformat()}"]
    reports = {
        name: [{k: v for k, v in r.to_dict().items() if not k.endswith("_path")} for r in run.reports]
        for name, run in runs.items()
    }
    assert reports["parallel"] == reports["serial"]
    assert runs["parallel"].published == runs["serial"].published == len(days) * len(CONTRACTS) - 1
    for contract in CONTRACTS:
        for day in days:
            for area in ("landing_dir", "quarantine_dir"):
                here = partition_dir(getattr(parallel, area), contract.channel, contract.table, day)
                there = partition_dir(getattr(serial, area), contract.channel, contract.table, day)
                files = sorted(p.name for p in here.glob("*.parquet"))
                assert files == sorted(p.name for p in there.glob("*.parquet")), (area, contract.name, day)
                for name in files:
                    same = pq.read_table(here / name).equals(pq.read_table(there / name))
                    assert same, (area, contract.name, day)
