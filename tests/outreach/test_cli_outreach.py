"""`memberflow segments preview` and `memberflow deliver` as an ops user runs them."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from memberflow.cli import app
from tests.support import TEST_ID_KEY

runner = CliRunner()


@pytest.fixture
def cli_env(delivery_ws, broad_segments, sandbox, monkeypatch):
    server = sandbox()
    monkeypatch.setenv("MEMBERFLOW_HOME", str(delivery_ws.home))
    monkeypatch.setenv("MEMBERFLOW_DATA_DIR", str(delivery_ws.data_dir))
    monkeypatch.setenv("MEMBERFLOW_ID_KEY", TEST_ID_KEY)
    monkeypatch.setenv("MEMBERFLOW_CLOCK", "2026-03-02T10:00:00+08:00")
    monkeypatch.setenv("COLUMNS", "200")
    return server


def test_preview_sends_nothing_and_shows_masked_members(cli_env):
    result = runner.invoke(app, ["segments", "preview", "--as-of", "2026-03-02", "--samples", "2"])
    assert result.exit_code == 0, result.output
    for name in ("care_wecom", "coupon_sms", "everyone_webhook", "sample members (masked)"):
        assert name in result.output
    assert re.search(r"1\d{2}\*{4}\d{4}", result.output)
    assert not re.search(r"(?<!\d)1[3-9]\d{9}(?!\d)", result.output)
    assert cli_env.state.snapshot()["requests"] == {"webhook": 0, "wecom": 0, "sms": 0}


def test_deliver_dry_run_then_for_real_then_again(cli_env):
    dry = runner.invoke(app, ["deliver", "--dry-run"])  # the date defaults to the published scores'
    assert dry.exit_code == 0, dry.output
    would = int(re.search(r"would send ([\d,]+)", dry.output).group(1).replace(",", ""))
    assert would > 100 and not cli_env.state.snapshot()["received"]

    real = runner.invoke(app, ["deliver", "--as-of", "2026-03-02"])
    assert real.exit_code == 0, real.output
    assert f"sent {would:,}" in real.output
    assert len(cli_env.state.snapshot()["received"]) == would

    again = runner.invoke(app, ["deliver", "--as-of", "2026-03-02"])
    assert again.exit_code == 0 and "sent 0" in again.output and f"already sent {would:,}" in again.output


def test_unusable_inputs_get_clear_errors(cli_env, tmp_path, monkeypatch):
    result = runner.invoke(app, ["deliver", "--as-of", "2025-01-01"])
    assert result.exit_code == 1 and "no member_features as of 2025-01-01" in result.output
    broken = tmp_path / "broken.yml"
    broken.write_text("version: 1\nsegments:\n  x: {description: d, channel: fax}\n")
    monkeypatch.setenv("MEMBERFLOW_SEGMENTS", str(broken))
    result = runner.invoke(app, ["segments", "preview", "--as-of", "2026-03-02"])
    assert result.exit_code == 2 and "segment 'x'" in result.output and "broken.yml" in result.output


def test_a_channel_without_endpoint_fails_its_rows_for_the_next_run(cli_env, monkeypatch):
    monkeypatch.delenv("MEMBERFLOW_SMS_URL")
    result = runner.invoke(app, ["deliver", "--as-of", "2026-03-02"])
    assert result.exit_code == 1
    assert "channel sms is not configured" in result.output
    assert cli_env.state.snapshot()["requests"]["sms"] == 0


def test_queue_show_prints_a_staff_members_queue_of_the_day(cli_env, delivery_ws):
    import json

    import duckdb

    assert runner.invoke(app, ["deliver", "--as-of", "2026-03-02"]).exit_code == 0
    with duckdb.connect(str(delivery_ws.warehouse_path), read_only=True) as con:
        staff, queued = con.execute(
            "select staff_owner, count(*) from staff_queue group by 1 order by 2 desc, 1 limit 1"
        ).fetchone()
    shown = runner.invoke(app, ["queue", "show", "--staff", staff, "--as-of", "2026-03-02", "--json"])
    assert shown.exit_code == 0, shown.output
    body = json.loads(shown.output)
    assert body["total"] == len(body["items"]) == queued and body["open"] == queued
    table = runner.invoke(app, ["queue", "show", "--staff", staff])
    assert table.exit_code == 0 and f"{queued} members" in table.output and "您好" in table.output
    assert not re.search(r"(?<!\d)1[3-9]\d{9}(?!\d)", table.output)
    unknown = runner.invoke(app, ["queue", "show", "--staff", "staff999"])
    assert unknown.exit_code == 1 and "no staff member 'staff999'" in unknown.output


def test_tags_sync_counts_then_sends_then_finds_nothing_new(cli_env, tmp_path, monkeypatch):
    fast = tmp_path / "outreach.yml"
    fast.write_text("channels:\n  wecom_tags: {rate_per_second: 1000}\n")
    monkeypatch.setenv("MEMBERFLOW_OUTREACH_CONFIG", str(fast))
    dry = runner.invoke(app, ["tags", "sync", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    would = int(re.search(r"would change ([\d,]+)", dry.output).group(1).replace(",", ""))
    assert would > 500 and not cli_env.state.tags_of_contacts()
    real = runner.invoke(app, ["tags", "sync"])
    assert real.exit_code == 0, real.output
    assert f"applied {would:,}" in real.output and len(cli_env.state.tags_of_contacts()) == would
    again = runner.invoke(app, ["tags", "sync"])
    assert again.exit_code == 0 and "changed 0" in again.output
