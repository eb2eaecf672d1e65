"""extract_channels executed by Airflow (dag.test runs every task for real, in this process)."""

from __future__ import annotations

import hashlib
import re
import shutil
import unicodedata
from datetime import timedelta
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from devkit.orchestrate import run_dag
from expectations.runner import load_results
from memberflow.core.contracts import CONTRACTS, Kind
from memberflow.core.phones import normalize_phone
from memberflow.extract import partition_dir, read_landed
from tests.support import SAMPLE_START

DAY = SAMPLE_START + timedelta(days=10)


def _digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        # quality results are a dated log of each validation, not data: they differ run to run
        if p.is_file() and "secrets" not in p.parts and "quality" not in p.parts
    }


def test_a_daily_run_lands_every_table(airflow_db, workspace_env):
    result = run_dag("extract_channels", DAY)
    assert result.ok, result.failed_tasks
    settings = workspace_env
    for contract in CONTRACTS:
        landed = partition_dir(settings.landing_dir, contract.channel, contract.table, DAY) / "part-0.parquet"
        quarantine = (
            partition_dir(settings.quarantine_dir, contract.channel, contract.table, DAY) / "part-0.parquet"
        )
        assert landed.exists() and quarantine.exists(), contract.name
    events = read_landed(settings, "wecom", "group_events")
    assert events.num_rows > 10
    assert set(events.column("_loaded_at").to_pylist()) == {events.column("_loaded_at")[0].as_py()}


def test_rerunning_and_backfilling_dates_is_idempotent(airflow_db, workspace_env):
    """Two days landed by one run (``days``: 2), then each date rerun on its own: the same files."""
    days = [DAY, DAY + timedelta(days=1)]
    result = run_dag("extract_channels", days[-1], conf={"days": 2})
    assert result.ok, result.failed_tasks
    assert len(result.task_states) == 3 * len(CONTRACTS) + 1  # one run: extract, gate, publish per table
    for day in days:
        results = load_results(workspace_env, "landing", day)
        assert len(results) == len(CONTRACTS) and {r.status for r in results} == {"passed"}
    first = _digests(workspace_env.home)
    for day in reversed(days):
        assert run_dag("extract_channels", day).ok
    assert _digests(workspace_env.home) == first
    dates = {p.name for p in (workspace_env.landing_dir / "wecom" / "contacts").iterdir()}
    assert dates == {f"dt={d.isoformat()}" for d in days}


def test_a_broken_export_fails_only_its_table(airflow_db, workspace_env, tmp_path, monkeypatch):
    data = tmp_path / "data"
    shutil.copytree(workspace_env.data_dir, data)
    monkeypatch.setenv("MEMBERFLOW_DATA_DIR", str(data))
    orders = partition_dir(data, "store_pos", "orders", DAY) / "part-0.csv"
    lines = orders.read_text().splitlines()
    # An export tool switched to semicolons: no row has the header's field count any more.
    broken = [f"S{i:03d};R{i};;2026-03-11 10:00:00;10.00;false" for i in range(20)]
    orders.write_text("\n".join([lines[0], *[line.replace(",", ";") for line in lines[1:]], *broken]) + "\n")
    result = run_dag("extract_channels", DAY)
    assert not result.ok
    assert result.task_states["store_pos__orders"] == "failed"
    assert result.failed_tasks == [
        "store_pos__orders",
        "store_pos__orders__gate",
        "store_pos__orders__publish",
    ]
    assert result.task_states["store_pos__orders__publish"] == "upstream_failed"
    assert result.task_states["quality_docs"] == "success"
    assert not partition_dir(workspace_env.landing_dir, "store_pos", "orders", DAY).exists()
    quarantine = pl.read_parquet(partition_dir(workspace_env.quarantine_dir, "store_pos", "orders", DAY))
    assert set(quarantine["reason"]) == {"malformed_row"}


def _source_phones(data_dir: Path) -> set[str]:
    """Every normalized phone the channels sent, read from the source files of tables that carry phones."""
    phones: set[str] = set()
    for contract in CONTRACTS:
        if not contract.phone_when and all(c.kind is not Kind.PHONE for c in contract.columns):
            continue
        for path in (data_dir / contract.channel / contract.table).rglob("part-0.*"):
            text = path.read_bytes().decode("utf-8", "replace")
            phones.update(p for p in map(normalize_phone, re.split(r"[,\"\n{}:]", text)) if p)
    return phones


def _digits(text: str) -> str:
    return re.sub(r"[\s\-]", "", unicodedata.normalize("NFKC", text))


def test_no_plain_phone_in_landed_files_logs_or_xcom(airflow_db, workspace_env, capfd):
    assert run_dag("extract_channels", DAY).ok
    captured = capfd.readouterr()
    phones = _source_phones(workspace_env.data_dir)
    assert len(phones) > 50

    texts = {"stdout/stderr of the run": captured.out + captured.err}
    for path in workspace_env.home.rglob("*"):
        if not path.is_file() or "secrets" in path.parts:
            continue
        if path.suffix == ".parquet":
            texts[str(path)] = str(pq.read_table(path).to_pylist())
        else:
            texts[str(path)] = path.read_bytes().decode("utf-8", "replace")
    for log in Path(airflow_db.airflow_home, "logs").rglob("*"):
        if log.is_file():
            texts[str(log)] = log.read_text(errors="replace")

    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        xcoms = [
            str(x.value) for x in session.query(XComModel).filter(XComModel.dag_id == "extract_channels")
        ]
    assert xcoms, "the run pushed its reports to XCom"
    texts["xcom"] = "\n".join(xcoms)

    leaks = {name: sorted(p for p in phones if p in _digits(text)) for name, text in texts.items()}
    assert {name: found for name, found in leaks.items() if found} == {}


def test_landed_phone_tables_carry_tokens(airflow_db, workspace_env):
    # one run, every table that receives phones (three runs of the same day used to check one table each)
    assert run_dag("extract_channels", DAY).ok
    for table in ("wecom.contacts", "store_pos.members", "consent.events"):
        channel, name = table.split(".")
        landed = read_landed(workspace_env, channel, name)
        columns = set(landed.column_names)
        assert "mobile" not in columns and "remark_mobile" not in columns, table
        if table != "consent.events":
            tokens = [t for t in landed.column("phone_token").to_pylist() if t]
            assert tokens and all(re.fullmatch(r"[0-9a-f]{64}", t) for t in tokens), table


def test_a_critical_quality_failure_skips_publishing_and_leaves_landing_alone(
    airflow_db, workspace_env, tmp_path, monkeypatch
):
    data = tmp_path / "data"
    shutil.copytree(workspace_env.data_dir, data)
    monkeypatch.setenv("MEMBERFLOW_DATA_DIR", str(data))
    # The platform export switched to fen: every amount is 100 times too large.
    orders = partition_dir(data, "ecommerce", "orders", DAY) / "part-0.csv"
    header, *rows = orders.read_text().splitlines()
    at = header.split(",").index("amount_cny")
    scaled = [
        ",".join(f if i != at else f"{float(f) * 100:.2f}" for i, f in enumerate(r.split(","))) for r in rows
    ]
    orders.write_text("\n".join([header, *scaled]) + "\n")

    result = run_dag("extract_channels", DAY)
    assert not result.ok
    assert result.task_states["ecommerce__orders"] == "success"
    assert result.task_states["ecommerce__orders__gate"] == "failed"
    assert result.task_states["ecommerce__orders__publish"] == "upstream_failed"
    assert result.failed_tasks == ["ecommerce__orders__gate", "ecommerce__orders__publish"]
    assert result.task_states["quality_docs"] == "success"
    # nothing was published for the table; the other tables were
    assert not partition_dir(workspace_env.landing_dir, "ecommerce", "orders", DAY).exists()
    assert partition_dir(workspace_env.audit_dir, "ecommerce", "orders", DAY).exists()
    assert partition_dir(workspace_env.landing_dir, "ecommerce", "order_items", DAY).exists()
    results = workspace_env.quality_dir / "results" / "landing" / f"dt={DAY.isoformat()}"
    assert '"status": "failed"' in (results / "ecommerce.orders.json").read_text()
    assert (workspace_env.quality_dir / "docs" / "index.html").exists()
