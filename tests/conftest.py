"""Shared fixtures. Airflow reads its settings at import, so its environment is set here, first."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from devkit.orchestrate import airflow_environment, apply_airflow_environment
from memberflow.core.settings import Settings, apply_privacy_defaults
from memberflow.core.vocab import MODELS
from tests.support import SAMPLE_DAYS, SAMPLE_START, TEST_ID_KEY, make_settings

_SESSION_HOME = Path(tempfile.mkdtemp(prefix="memberflow-tests-"))
SESSION_SETTINGS = Settings.from_env(
    {"MEMBERFLOW_HOME": str(_SESSION_HOME), "MEMBERFLOW_ID_KEY": TEST_ID_KEY}
)
apply_privacy_defaults()
# Every test process has an Airflow home and metadata database of its own. pytest-xdist starts its workers
# with the environment of the main process, which has loaded this file too: without dropping what it set,
# both workers would run their DAGs in one SQLite database (and fail on each other's rows).
for _key in airflow_environment(SESSION_SETTINGS):
    if _key.startswith("AIRFLOW"):
        os.environ.pop(_key, None)
apply_airflow_environment(SESSION_SETTINGS)
# Keys the tests' workspaces make go to their default place under the user's config folder: a folder of
# the session here, never the real one.
os.environ["XDG_CONFIG_HOME"] = str(_SESSION_HOME / "config")
# The CLI's tables and paths print at this width whether or not a terminal (or an xdist worker) runs them.
os.environ["COLUMNS"] = "200"


# The fast tier (`./dev test --fast`, i.e. `-m "not slow"`) is every test that builds no warehouse, trains
# no model, runs no DAG and starts no service stack: what a test needs decides its tier. A test that is
# slow for another reason carries @pytest.mark.slow itself (SLOW_FIXTURES, below).

# With pytest-xdist (`./dev test` runs two workers, --dist loadgroup) the tests that share an expensive
# session fixture run on one worker, which builds it once: the scored sample (trained and scored models,
# the outreach, ops API and model tiers), the built sample (dbt, quality gates, CLI), and the integration
# stack. Every other test goes wherever a worker is free.
SCORED_FIXTURES = frozenset(
    {
        "trained_ws",
        "scored",
        "ml_workspace",
        "trained",
        "delivery_ws",
        "ops_ws",
        "tokens",
        "api_app",
        "client",
    }
)
BUILT_FIXTURES = frozenset({"business_sample", "built", "workspace_copy"})
SLOW_FIXTURES = SCORED_FIXTURES | BUILT_FIXTURES | {"airflow_db", "workspace_env", "history", "production"}


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        needs = set(getattr(item, "fixturenames", ()))
        if item.get_closest_marker("integration"):
            group = "stack"
        elif needs & SCORED_FIXTURES or item.get_closest_marker("browser"):
            group = "scored"
        elif needs & BUILT_FIXTURES:
            group = "built"
        else:
            group = None
        if group is not None and not item.get_closest_marker("xdist_group"):
            item.add_marker(pytest.mark.xdist_group(group))
        if needs & SLOW_FIXTURES or group is not None or item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.slow)
    # the longest groups first, so that each worker starts on one and the short tests fill in after
    order = {"stack": 0, "scored": 1, "built": 2}

    def rank(item: pytest.Item) -> int:
        marker = item.get_closest_marker("xdist_group")
        return order.get(marker.args[0] if marker and marker.args else None, 3)

    items.sort(key=rank)


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
    from tests.support import DAYS, START

    out = tmp_path_factory.mktemp("business")
    generate(GenerateConfig(2500, START, DAYS, 21, out), TEST_ID_KEY.encode())
    return out


@pytest.fixture(scope="session")
def built(tmp_path_factory, business_sample) -> Settings:
    """A workspace whose warehouse dbt built from the whole business sample."""
    from tests.support import land_and_build

    settings = make_settings(tmp_path_factory.mktemp("built") / "ws", business_sample)
    land_and_build(settings, business_sample)
    return settings


@pytest.fixture(scope="session")
def trained_ws(tmp_path_factory, built) -> tuple[Settings, dict]:
    """The business sample built and gated, with repurchase, churn and conversion trained once (each the
    first of its name, so each becomes champion); the training results by model."""
    from ml.train import train
    from tests.support import CUTOFFS, HORIZON, published_copy

    settings = published_copy(built, tmp_path_factory.mktemp("trained"))
    return settings, {model: train(settings, model, CUTOFFS, HORIZON) for model in MODELS}


@pytest.fixture(scope="session")
def scored(tmp_path_factory, trained_ws) -> Settings:
    """A copy of the trained workspace with every model's population scored for SCORE_DAY and the scores
    gate passed (shared by the outreach and ops API tiers)."""
    from expectations.marts import gate_warehouse
    from ml.score import score
    from tests.support import SCORE_DAY, copy_workspace

    settings = copy_workspace(trained_ws[0], tmp_path_factory.mktemp("scored"))
    for model in MODELS:
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
