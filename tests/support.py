"""Helpers and constants the test tiers share. Fixtures live in tests/conftest.py (shared ones, built once
per session) and in each tier's conftest.py (that tier's own); no tier imports another tier's conftest."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl
import pyarrow.parquet as pq

from devkit.background import BackgroundServer
from expectations.marts import gate_warehouse
from memberflow.core.contracts import CONTRACTS
from memberflow.core.settings import Settings
from memberflow.core.vault import ContactVault, partition_files
from memberflow.extract import partition_days
from memberflow.pipeline import land_pending
from memberflow.transform import build_warehouse, latest_landed_day

TEST_ID_KEY = "memberflow-test-id-key"

# the small sample most tiers read: 600 people over 21 days from 2026-03-01
SAMPLE_START = date(2026, 3, 1)
SAMPLE_DAYS = 21

# the business sample: 2,500 people over 60 days (2026-01-01 .. 2026-03-01)
START = date(2026, 1, 1)
DAYS = 60
# it trains with a 14-day horizon on three weekly cutoffs and holds out 2026-02-15 (its label window ends on
# the last landed day); scores are for the day after the last landed day
CUTOFFS = [date(2026, 1, 18), date(2026, 1, 25), date(2026, 2, 1), date(2026, 2, 15)]
HORIZON = 14
SCORE_DAY = date(2026, 3, 2)
# deliveries of the scored day happen the morning after, outside quiet hours; two earlier days of
# memberships give the ops page a trend
MORNING = datetime.fromisoformat(f"{SCORE_DAY.isoformat()}T10:00:00+08:00")
HISTORY_DAYS = (SCORE_DAY - timedelta(days=2), SCORE_DAY - timedelta(days=1))


def make_settings(home: Path, data_dir: Path | None = None, **extra: str) -> Settings:
    env = {"MEMBERFLOW_HOME": str(home), "MEMBERFLOW_ID_KEY": TEST_ID_KEY, **extra}
    if data_dir is not None:
        env["MEMBERFLOW_DATA_DIR"] = str(data_dir)
    return Settings.from_env(env)


def land_and_build(settings, data_dir: Path, as_of: date | None = None):
    """Land (extract, landing gate, publish) every pending partition, then build; any failure raises."""
    run = land_pending(settings, data_dir, as_of)
    assert run.ok, run.errors
    return build_warehouse(settings, as_of)


def query(settings, sql: str) -> pl.DataFrame:
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        return con.sql(sql).pl()


def copy_workspace(source: Settings, target: Path) -> Settings:
    """A private copy of a workspace (warehouse, MLflow store, ledger...) over the same source data."""
    shutil.copytree(source.home, target / "ws")
    return make_settings(target / "ws", source.data_dir)


def published_copy(source: Settings, target) -> Settings:
    """A private copy of a built workspace whose marts gate passed (training and scoring require it)."""
    shutil.copytree(source.home, target / "ws")
    settings = make_settings(target / "ws", source.data_dir)
    gate_warehouse(settings, latest_landed_day(settings))
    return settings


def hold_back(settings, away: Path, pick: Callable[[list[date]], list[date]]) -> list[tuple[Path, Path]]:
    """Move the partitions ``pick`` chooses from each table's landed days out of the landing zone (as if
    they had not arrived yet); returns (folder, where it went) pairs for ``bring_back``."""
    held = []
    for contract in CONTRACTS:
        partitions = partition_days(settings.landing_dir / contract.channel / contract.table)
        for day in pick(sorted(partitions)):
            folder = partitions[day]
            held.append((folder, away / contract.channel / contract.table / folder.name))
            held[-1][1].parent.mkdir(parents=True, exist_ok=True)
            shutil.move(folder, held[-1][1])
    return held


def bring_back(held: list[tuple[Path, Path]]) -> None:
    for folder, away in held:
        shutil.move(away, folder)


def build_in_two_steps(settings: Settings, away: Path):
    """Build a copy of the built sample on the configured server target from nothing (no DuckDB file, no
    identity snapshot), in two steps so the incremental models run there too: first without every table's
    last five days, then with them (a build that adds their partitions and recomputes the engagement of
    the members they touch, identity changes included). Returns the second build's result."""
    from memberflow.transform import plan_incremental_build

    settings.warehouse_path.unlink()
    shutil.rmtree(settings.home / "identity")
    held = hold_back(settings, away, lambda days: days[-5:])
    build_warehouse(settings, snapshot=False)
    bring_back(held)
    assert set(plan_incremental_build(settings).values()) == {None}
    result = build_warehouse(settings)  # raises on any failed model, unit test or data test
    assert result.succeeded >= 80
    return result


def vault_phones(settings: Settings) -> set[str]:
    """Every plain number the workspace's contact vault can give."""
    vault = ContactVault(settings.vault_key())
    phones: set[str] = set()
    for path in partition_files(settings.vault_dir):
        phones |= {vault.open(s) for s in pq.read_table(path)["phone_sealed"].to_pylist()}
    return phones


def fake_phone(i: int) -> str:
    """An obviously made-up mainland mobile number, built at test time."""
    return "139" + f"{i:08d}"


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def LiveServer(app) -> BackgroundServer:
    """The app served by uvicorn on a free port in a background thread (for the browser)."""
    return BackgroundServer(app, name="ops API")


# Screenshots of the browser tests go here (kept as test artifacts).
BROWSER_OUTPUT = (
    Path(os.environ.get("MEMBERFLOW_TEST_OUTPUT") or Path(__file__).parents[1] / "test-output") / "browser"
)
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def chromium() -> str:
    import pytest

    found = (
        os.environ.get("MEMBERFLOW_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    )
    if not found:
        pytest.fail(
            "no Chromium found: install Debian's `chromium` package (./dev test does when it can), set "
            "MEMBERFLOW_CHROMIUM, or deselect this test with -m 'not browser'"
        )
    return found


@contextmanager
def browser_page(app, locale: str = "zh-CN") -> Iterator:
    """A headless Chromium page (Playwright, the system's Chromium) with ``page.base_url`` set to ``app``
    served on a free port."""
    from playwright.sync_api import sync_playwright

    BROWSER_OUTPUT.mkdir(parents=True, exist_ok=True)
    with LiveServer(app) as server, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), args=CHROMIUM_FLAGS)
        context = browser.new_context(
            viewport={"width": 1366, "height": 850}, accept_downloads=True, locale=locale
        )
        page = context.new_page()
        page.set_default_timeout(20_000)
        page.base_url = server.url
        try:
            yield page
        finally:
            context.close()
            browser.close()


def screenshot(page, name: str) -> None:
    page.screenshot(path=str(BROWSER_OUTPUT / f"{name}.png"), full_page=True)
