"""The promotion gate: a challenger becomes champion only by beating the baselines and the champion."""

from __future__ import annotations

import pytest

from ml.config import model_spec
from ml.registry import CHALLENGER, CHAMPION, NoChampionError, alias_version, rollback, set_alias
from ml.train import train
from tests.support import CUTOFFS, HORIZON, published_copy

# A model starved of splits: a handful of stumps on one feature in ten.
WEAK = {"num_leaves": 2, "learning_rate": 0.01, "feature_fraction": 0.1, "min_data_in_leaf": 400}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, built):
    return published_copy(built, tmp_path_factory.mktemp("promotion"))


def test_promotion_gate_and_rollback(workspace):
    first = train(workspace, "churn", CUTOFFS, HORIZON)
    assert first.decision.promote, first.decision.reason
    assert alias_version(workspace, "churn", CHAMPION).version == first.version

    # a worse challenger stays challenger; the champion does not move
    weak = train(workspace, "churn", CUTOFFS, HORIZON, params=WEAK)
    assert not weak.decision.promote
    assert "champion" in weak.decision.reason
    # the reason says which metric fell short of the champion's and what it needed
    needed = weak.evaluation.metrics["champion"]["auc"] + model_spec("churn").margins["champion"]["auc"]
    assert f"needs at least {needed:.4f}" in weak.decision.comparisons["champion"]
    assert weak.evaluation.metrics["model"]["auc"] < weak.evaluation.metrics["champion"]["auc"]
    assert alias_version(workspace, "churn", CHAMPION).version == first.version
    assert alias_version(workspace, "churn", CHALLENGER).version == weak.version

    # the same model again is not better by the margin: it stays challenger too
    same = train(workspace, "churn", CUTOFFS, HORIZON)
    assert not same.decision.promote
    assert alias_version(workspace, "churn", CHAMPION).version == first.version

    # with the weak model as champion, a better model is promoted and remembers whom it replaced
    set_alias(workspace, "churn", CHAMPION, weak.version)
    better = train(workspace, "churn", CUTOFFS, HORIZON)
    assert better.decision.promote, better.decision.reason
    assert alias_version(workspace, "churn", CHAMPION).version == better.version

    # rolling back moves the alias: to the replaced champion, or to a named version
    assert rollback(workspace, "churn").version == weak.version
    assert rollback(workspace, "churn", first.version).version == first.version


def test_a_first_model_that_does_not_beat_the_baselines_is_not_promoted(tmp_path, built, monkeypatch):
    # margins say a model must beat the baselines' AUC by 0.5: no model can
    config = tmp_path / "models.yml"
    config.write_text("defaults:\n  margins:\n    baseline: {auc: 0.5}\n")
    monkeypatch.setenv("MEMBERFLOW_MODELS_CONFIG", str(config))
    workspace = published_copy(built, tmp_path)
    first = train(workspace, "conversion", CUTOFFS, HORIZON)
    assert not first.decision.promote
    assert "does not beat recency" in first.decision.reason
    assert alias_version(workspace, "conversion", CHAMPION) is None
    assert alias_version(workspace, "conversion", CHALLENGER).version == first.version
    with pytest.raises(NoChampionError):
        rollback(workspace, "conversion")
