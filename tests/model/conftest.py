"""Fixtures of the model tier: private copies of the session's trained workspace (tests/conftest.py)."""

from __future__ import annotations

import pytest

from memberflow.core.settings import Settings
from tests.support import copy_workspace


@pytest.fixture(scope="module")
def ml_workspace(tmp_path_factory, trained_ws) -> Settings:
    """The business sample built and gated, its three models trained; the module may change it."""
    return copy_workspace(trained_ws[0], tmp_path_factory.mktemp("ml"))


@pytest.fixture(scope="module")
def trained(trained_ws) -> dict:
    """The training results by model (each model the first of its name, so each became champion)."""
    return trained_ws[1]
