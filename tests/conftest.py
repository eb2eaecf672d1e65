"""Shared fixtures. Airflow reads its settings at import, so its environment is set here, first."""

from __future__ import annotations

import os
import tempfile
from datetime import date
from pathlib import Path

import pytest

from devkit.orchestrate import apply_airflow_environment
from memberflow.core.settings import Settings, apply_privacy_defaults

TEST_ID_KEY = "memberflow-test-id-key"
_SESSION_HOME = Path(tempfile.mkdtemp(prefix="memberflow-tests-"))
SESSION_SETTINGS = Settings.from_env(
    {"MEMBERFLOW_HOME": str(_SESSION_HOME), "MEMBERFLOW_ID_KEY": TEST_ID_KEY}
)
apply_privacy_defaults()
apply_airflow_environment(SESSION_SETTINGS)

SAMPLE_START = date(2026, 3, 1)
SAMPLE_DAYS = 21


def make_settings(home: Path, data_dir: Path | None = None, **extra: str) -> Settings:
    env = {"MEMBERFLOW_HOME": str(home), "MEMBERFLOW_ID_KEY": TEST_ID_KEY, **extra}
    if data_dir is not None:
        env["MEMBERFLOW_DATA_DIR"] = str(data_dir)
    return Settings.from_env(env)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "ws", tmp_path / "data")


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small generated sample shared by the tests that only read it."""
    from devkit.generate import GenerateConfig, generate

    out = tmp_path_factory.mktemp("sample")
    generate(GenerateConfig(600, SAMPLE_START, SAMPLE_DAYS, 11, out), TEST_ID_KEY.encode())
    return out


@pytest.fixture(scope="session")
def airflow_db() -> Settings:
    """The session's Airflow metadata database (SQLite), migrated once."""
    from devkit.orchestrate import prepare_airflow

    prepare_airflow(SESSION_SETTINGS)
    return SESSION_SETTINGS


@pytest.fixture
def workspace_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sample_dir: Path) -> Settings:
    """Point in-process Airflow tasks (which read the environment) at a fresh workspace over the sample."""
    home = tmp_path / "ws"
    monkeypatch.setenv("MEMBERFLOW_HOME", str(home))
    monkeypatch.setenv("MEMBERFLOW_DATA_DIR", str(sample_dir))
    monkeypatch.setenv("MEMBERFLOW_ID_KEY", TEST_ID_KEY)
    return make_settings(home, sample_dir)


def pytest_sessionfinish(session, exitstatus) -> None:
    import shutil

    shutil.rmtree(_SESSION_HOME, ignore_errors=True)
    os.environ.pop("AIRFLOW_HOME", None)


@pytest.fixture(scope="session")
def business_sample(tmp_path_factory) -> Path:
    """2,500 people over 60 days: enough for identity and model behaviour to show."""
    from devkit.generate import GenerateConfig, generate
    from tests.dbt.conftest import DAYS, START

    out = tmp_path_factory.mktemp("business")
    generate(GenerateConfig(2500, START, DAYS, 21, out), TEST_ID_KEY.encode())
    return out


@pytest.fixture(scope="session")
def built(tmp_path_factory, business_sample) -> Settings:
    """A workspace whose warehouse dbt built from the whole business sample."""
    from tests.dbt.conftest import land_and_build

    settings = make_settings(tmp_path_factory.mktemp("built") / "ws", business_sample)
    land_and_build(settings, business_sample)
    return settings


@pytest.fixture(scope="session")
def scored(tmp_path_factory, built) -> Settings:
    """The business sample built, gated, with repurchase, churn and conversion trained and scored
    (shared by the outreach and ops API tiers)."""
    from expectations.marts import gate_warehouse
    from ml.score import score
    from ml.train import train
    from tests.model.conftest import CUTOFFS, HORIZON, SCORE_DAY, published_copy

    settings = published_copy(built, tmp_path_factory.mktemp("scored"))
    for model in ("repurchase", "churn", "conversion"):
        train(settings, model, CUTOFFS, HORIZON)
        score(settings, model, SCORE_DAY)
    gate_warehouse(settings, SCORE_DAY, gate="scores")
    return settings


@pytest.fixture
def workspace_copy(tmp_path, built) -> Settings:
    """A private copy of the built workspace and of its source data, for tests that change them."""
    import shutil

    shutil.copytree(built.home, tmp_path / "ws")
    shutil.copytree(built.data_dir, tmp_path / "data")
    return make_settings(tmp_path / "ws", tmp_path / "data")
