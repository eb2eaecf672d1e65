"""The memberflow command as a user runs it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import timedelta

import pytest
from typer.testing import CliRunner

from memberflow.cli import app
from memberflow.core.contracts import CONTRACTS
from memberflow.core.settings import Settings
from tests.support import SAMPLE_START, TEST_ID_KEY, make_settings, query, vault_phones

runner = CliRunner()


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("MEMBERFLOW_HOME", str(tmp_path / "ws"))
    monkeypatch.setenv("MEMBERFLOW_ID_KEY", TEST_ID_KEY)
    monkeypatch.delenv("MEMBERFLOW_DATA_DIR", raising=False)
    return tmp_path


def test_help_lists_the_stages():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("generate", "extract", "demo", "where"):
        assert command in result.output


def test_generate_then_extract_a_range(env):
    out = env / "data"
    result = runner.invoke(
        app,
        [
            "generate",
            "--members",
            "200",
            "--start",
            "2026-03-01",
            "--days",
            "4",
            "--seed",
            "3",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert (out / "_truth" / "persons.parquet").exists()
    result = runner.invoke(
        app, ["extract", "--data-dir", str(out), "--date", "2026-03-02", "--to", "2026-03-03"]
    )
    assert result.exit_code == 0, result.output
    assert "landed partitions" in result.output and "wecom.group_events" in result.output
    assert result.output.count("passed") == 2 * len(CONTRACTS)  # every table x 2 days, each through the gate
    assert (env / "ws" / "landing" / "consent" / "events" / "dt=2026-03-03" / "part-0.parquet").exists()


def test_extract_of_a_missing_date_exits_2_and_names_it(env, sample_dir):
    day = SAMPLE_START - timedelta(days=1)
    result = runner.invoke(
        app,
        ["extract", "--data-dir", str(sample_dir), "--date", day.isoformat(), "--table", "wecom.contacts"],
    )
    assert result.exit_code == 2
    assert f"wecom.contacts: no partition for {day.isoformat()}" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["extract", "--date", "2026-13-01"], "not a date"),
        (["extract", "--date", "2026-03-02", "--to", "2026-03-01"], "before --date"),
        (["extract", "--date", "2026-03-02", "--table", "wecom.nothing"], "no landing contract"),
        (["generate", "--members", "0"], "members"),
    ],
)
def test_bad_arguments_get_a_clear_error(env, args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in result.output


def test_where_prints_the_workspace(env):
    result = runner.invoke(app, ["where"])
    assert result.exit_code == 0
    assert str(env / "ws" / "landing") in result.output


@pytest.mark.slow  # builds the warehouse with dbt
def test_demo_runs_airflow_end_to_end(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MEMBERFLOW"))}
    env.update(MEMBERFLOW_HOME=str(tmp_path / "ws"), COLUMNS="160")
    result = subprocess.run(
        [sys.executable, "-m", "memberflow", "demo", "--members", "300", "--days", "3"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Airflow ran extract_channels once for 3 days" in result.stdout
    assert "s (succeeded)" in result.stdout
    assert "what was built" in result.stdout and "consent.events" in result.stdout
    assert f"landing quality gate: {3 * len(CONTRACTS)} passed" in result.stdout
    assert "marts quality gate: 4 passed" in result.stdout
    assert (tmp_path / "ws" / "airflow" / "airflow.db").exists()
    assert (tmp_path / "ws" / "quality" / "published" / "marts.json").exists()
    assert (
        tmp_path / "ws" / "landing" / "wecom" / "group_events" / "dt=2026-01-03" / "part-0.parquet"
    ).exists()
    # no plain phone anywhere the demo wrote (warehouse, landing, quarantine, reports, Airflow's logs and
    # database, quality results): only in the channels' own sample files, and sealed in the vault
    workspace = Settings.from_env({"MEMBERFLOW_HOME": str(tmp_path / "ws")})
    phones = vault_phones(workspace)
    assert len(phones) > 100
    for path in workspace.home.rglob("*"):
        if path.is_file() and path.relative_to(workspace.home).parts[0] not in ("sample", "secrets"):
            found = set(re.findall(r"(?<!\d)1[3-9]\d{9}(?!\d)", path.read_bytes().decode("latin-1")))
            assert not found & phones, path


@pytest.mark.slow  # builds the warehouse with dbt
def test_build_then_identity_report(env):
    data = env / "data"
    assert (
        runner.invoke(app, ["generate", "--members", "300", "--days", "10", "--out", str(data)]).exit_code
        == 0
    )
    result = runner.invoke(app, ["build", "--data-dir", str(data)])
    assert result.exit_code == 0, result.output
    assert f"landed {10 * len(CONTRACTS)} pending partitions" in result.output
    assert "dim_member" in result.output and "member_features" in result.output
    again = runner.invoke(app, ["build", "--data-dir", str(data)])
    assert again.exit_code == 0 and "landed 0 pending partitions" in again.output

    report = runner.invoke(app, ["identity", "report", "--data-dir", str(data)])
    assert report.exit_code == 0, report.output
    assert "pairwise precision 1.0000" in report.output
    assert "identifiers per" in report.output and "dropped edges" in report.output


@pytest.mark.slow  # builds the warehouse with dbt
def test_build_on_the_postgres_target_lands_loads_and_builds_there(env, monkeypatch):
    import uuid

    from memberflow.core.settings import PgSettings
    from memberflow.postgres import drop_database, read_relation

    data = env / "data"
    assert (
        runner.invoke(app, ["generate", "--members", "200", "--days", "5", "--out", str(data)]).exit_code == 0
    )
    monkeypatch.setenv("MEMBERFLOW_DBT_TARGET", "duckdb")  # --target switches it; restored afterwards
    monkeypatch.setenv("MEMBERFLOW_PG_DATABASE", f"memberflow_cli_{uuid.uuid4().hex[:10]}")
    pg = PgSettings.from_env()
    try:
        result = runner.invoke(app, ["build", "--data-dir", str(data), "--target", "postgres"])
        assert result.exit_code == 0, result.output
        assert f"landed {5 * len(CONTRACTS)} pending partitions" in result.output
        # the marts built there were copied into the serving store, where the marts gate checked them
        assert "marts quality gate passed" in result.output or "marts quality gate warning" in result.output
        members = read_relation(pg, f"select count(*) as n from {pg.schema}.dim_member")["n"][0]
        served = query(make_settings(env / "ws"), "select count(*) as n from dim_member")["n"][0]
        assert members == served > 100 and f"{members:,}" in result.output
    finally:
        drop_database(pg)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MEMBERFLOW_PG_SCHEMA", "mf; drop schema public"),
        ("MEMBERFLOW_PG_DATABASE", "Member-Flow"),
        ("MEMBERFLOW_PG_PORT", "x"),
    ],
)
def test_build_on_postgres_refuses_unusable_settings_before_landing_anything(
    env, monkeypatch, variable, value
):
    monkeypatch.setenv("MEMBERFLOW_DBT_TARGET", "duckdb")  # --target switches it; restored afterwards
    monkeypatch.setenv(variable, value)
    result = runner.invoke(app, ["build", "--data-dir", str(env / "nowhere"), "--target", "postgres"])
    assert result.exit_code == 2
    assert variable in result.output and "landed" not in result.output


def test_build_stops_before_dbt_when_a_partition_quarantines_too_much(env, monkeypatch):
    data = env / "data"
    assert (
        runner.invoke(app, ["generate", "--members", "200", "--days", "3", "--out", str(data)]).exit_code == 0
    )
    orders = next((data / "store_pos" / "orders" / "dt=2026-01-02").glob("*.csv"))
    orders.write_text(orders.read_text().splitlines()[0] + "\n" + "S1;R1;;x;1;false\n" * 30)
    result = runner.invoke(app, ["build", "--data-dir", str(data)])
    assert result.exit_code == 1
    assert "store_pos.orders 2026-01-02: 30 of 30 rows quarantined" in result.output
    assert "not building" in result.output
    assert not (env / "ws" / "warehouse.duckdb").exists()


def test_identity_report_without_a_warehouse_says_so(env):
    result = runner.invoke(app, ["identity", "report"])
    assert result.exit_code == 2
    assert "run `memberflow build` first" in result.output


@pytest.mark.slow  # builds the warehouse with dbt
def test_build_stops_on_a_failed_landing_gate_and_the_quality_report_shows_it(env):
    data = env / "data"
    assert (
        runner.invoke(app, ["generate", "--members", "300", "--days", "6", "--out", str(data)]).exit_code == 0
    )
    orders = data / "ecommerce" / "orders" / "dt=2026-01-04" / "part-0.csv"
    original = orders.read_text()
    header, *rows = original.splitlines()
    at = header.split(",").index("amount_cny")
    scaled = [
        ",".join(f if i != at else f"{float(f) * 100:.2f}" for i, f in enumerate(r.split(","))) for r in rows
    ]
    orders.write_text("\n".join([header, *scaled]) + "\n")

    result = runner.invoke(app, ["build", "--data-dir", str(data)])
    assert result.exit_code == 1
    assert "ecommerce.orders 2026-01-04: expect_column_median_to_be_between(amount_cny)" in result.output
    assert "[amount_median, critical]" in result.output and "observed" in result.output
    assert "not building" in result.output
    assert not (env / "ws" / "warehouse.duckdb").exists()

    report = runner.invoke(app, ["quality", "report", "--date", "2026-01-04", "--gate", "landing"])
    assert report.exit_code == 1
    assert "ecommerce.orders" in report.output and "failed" in report.output
    assert "Data Docs:" in report.output

    # The channel re-sends the day in yuan: the next build lands it, builds and publishes the marts.
    orders.write_text(original)
    result = runner.invoke(app, ["build", "--data-dir", str(data)])
    assert result.exit_code == 0, result.output
    assert "landed 1 pending partitions" in result.output
    assert "marts quality gate passed for 2026-01-06" in result.output
    report = runner.invoke(app, ["quality", "report"])
    assert report.exit_code == 0, report.output
    assert "landing gate, 2026-01-06" in report.output and "marts gate, 2026-01-06" in report.output
    assert "member_identifiers" in report.output


def test_quality_report_without_results_exits_2(env):
    result = runner.invoke(app, ["quality", "report"])
    assert result.exit_code == 2
    assert "no landing gate results" in result.output


@pytest.mark.slow  # builds the warehouse with dbt
def test_build_exits_1_when_the_marts_gate_fails_and_keeps_them_unpublished(env, monkeypatch, tmp_path):
    data = env / "data"
    assert (
        runner.invoke(app, ["generate", "--members", "300", "--days", "6", "--out", str(data)]).exit_code == 0
    )
    # An operator declares the business started on day 3: members first seen before it are implausible.
    override = tmp_path / "quality.yml"
    override.write_text('marts:\n  checks:\n    dates_in_range: {business_start: "2026-01-03"}\n')
    monkeypatch.setenv("MEMBERFLOW_QUALITY_CONFIG", str(override))
    result = runner.invoke(app, ["build", "--data-dir", str(data)])
    assert result.exit_code == 1
    assert "marts quality gate failed; the marts are not published" in result.output
    assert "dim_member 2026-01-06: expect_column_values_to_be_between(first_seen_on)" in result.output
    assert "[dates_in_range, critical]" in result.output
    assert not (env / "ws" / "quality" / "published" / "marts.json").exists()
    assert not (env / "ws" / "identity" / "assignments.parquet").exists()

    monkeypatch.setenv("MEMBERFLOW_QUALITY_CONFIG", str(tmp_path / "missing.yml"))
    result = runner.invoke(app, ["build", "--data-dir", str(data)])
    assert result.exit_code == 2 and "MEMBERFLOW_QUALITY_CONFIG: no such file" in result.output


def test_model_commands_explain_unusable_inputs(tmp_path, monkeypatch):
    monkeypatch.setenv("MEMBERFLOW_HOME", str(tmp_path / "ws"))
    monkeypatch.setenv("MEMBERFLOW_ID_KEY", TEST_ID_KEY)
    result = runner.invoke(app, ["train", "--model", "uplift"])
    assert result.exit_code == 2 and "not a model" in result.output
    result = runner.invoke(app, ["train", "--model", "churn"])
    assert result.exit_code == 1 and "quality gate has not passed" in result.output
    (tmp_path / "ws" / "quality" / "published").mkdir(parents=True)
    (tmp_path / "ws" / "quality" / "published" / "marts.json").write_text('{"date": "2026-03-01"}')
    result = runner.invoke(app, ["score", "--model", "churn", "--as-of", "2026-03-02"])
    assert result.exit_code == 1 and "memberflow train --model churn" in result.output
    bad = tmp_path / "models.yml"
    bad.write_text("models:\n  uplift: {horizon_days: 3}\n")
    monkeypatch.setenv("MEMBERFLOW_MODELS_CONFIG", str(bad))
    result = runner.invoke(app, ["train", "--model", "churn"])
    assert result.exit_code == 2 and "unknown model 'uplift'" in result.output


def test_backtest_prints_the_table_and_writes_the_report(tmp_path, monkeypatch, built):
    from tests.support import published_copy

    settings = published_copy(built, tmp_path)
    monkeypatch.setenv("MEMBERFLOW_HOME", str(settings.home))
    monkeypatch.setenv("MEMBERFLOW_ID_KEY", TEST_ID_KEY)
    result = runner.invoke(
        app,
        [
            "backtest",
            "--model",
            "churn",
            "--cutoffs",
            "2026-01-18,2026-01-25,2026-02-01",
            "--test-cutoff",
            "2026-02-15",
            "--horizon-days",
            "14",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "recency" in result.output and "model" in result.output
    report = settings.reports_dir / "backtest" / "churn-2026-02-15"
    assert {"report.md", "metrics.json", "manifest.json", "roc.png", "calibration.png"} <= {
        p.name for p in report.iterdir()
    }
    assert "| recency |" in (report / "report.md").read_text()
