"""Fixtures of the model tier: copies of the built business sample with the marts gate published.

The sample has 60 days (2026-01-01 .. 2026-03-01), so the tier trains with a 14-day horizon on three weekly
cutoffs and holds out 2026-02-15 (its label window ends on the last landed day).
"""

from __future__ import annotations

import pytest

from memberflow.core.settings import Settings
from tests.support import CUTOFFS, HORIZON, published_copy


@pytest.fixture(scope="module")
def ml_workspace(tmp_path_factory, built) -> Settings:
    return published_copy(built, tmp_path_factory.mktemp("ml"))


@pytest.fixture(scope="module")
def trained(ml_workspace):
    """Repurchase and churn trained once on the module's workspace (both become champion)."""
    from ml.train import train

    return {m: train(ml_workspace, m, CUTOFFS, HORIZON) for m in ("repurchase", "churn")}
