"""MLflow: one experiment per model, a registered model per model, aliases ``champion`` and ``challenger``.

The default store is SQLite plus local artifacts under ``$MEMBERFLOW_HOME/mlflow``; ``MEMBERFLOW_MLFLOW_URI``
points it at a shared server instead. Models are saved in LightGBM's text format (mlflow.lightgbm with a
Booster), so loading works with MLflow's pickle deserialization switched off. Rolling back is moving the
``champion`` alias to an earlier version.
"""

from __future__ import annotations

from dataclasses import dataclass

from memberflow.core.settings import Settings, apply_privacy_defaults

CHAMPION, CHALLENGER = "champion", "challenger"


def registered_name(model: str) -> str:
    return f"memberflow-{model}"


def experiment_name(model: str) -> str:
    return f"memberflow-{model}"


class NoChampionError(LookupError):
    """The model has no champion yet (train one that beats the baselines)."""


def connect(settings: Settings):
    """Point MLflow at the workspace store; returns an MlflowClient."""
    apply_privacy_defaults()
    import mlflow
    from mlflow import MlflowClient

    if not settings.mlflow_uri.startswith(("http://", "https://")):
        settings.mlflow_dir.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(settings.mlflow_uri)
    mlflow.set_registry_uri(settings.mlflow_uri)
    return MlflowClient(settings.mlflow_uri, settings.mlflow_uri)


def experiment_id(settings: Settings, model: str) -> str:
    client = connect(settings)
    name = experiment_name(model)
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    if not settings.mlflow_uri.startswith(("http://", "https://")):
        # A database or file store has no artifact server: keep artifacts in the workspace, never in
        # MLflow's default ./mlruns under whatever directory the process started in.
        location = (settings.mlflow_dir / "artifacts" / model).resolve().as_uri()
    return client.create_experiment(name, artifact_location=location)


@dataclass(frozen=True)
class ModelRef:
    model: str
    version: str
    run_id: str
    uri: str


def alias_version(settings: Settings, model: str, alias: str) -> ModelRef | None:
    from mlflow.exceptions import MlflowException

    client = connect(settings)
    try:
        mv = client.get_model_version_by_alias(registered_name(model), alias)
    except MlflowException:
        return None
    return ModelRef(model, str(mv.version), mv.run_id, f"models:/{registered_name(model)}/{mv.version}")


def set_alias(settings: Settings, model: str, alias: str, version: str) -> None:
    connect(settings).set_registered_model_alias(registered_name(model), alias, str(version))


def rollback(settings: Settings, model: str, version: str | None = None) -> ModelRef:
    """Move ``champion`` to ``version``, or to the champion this one replaced (recorded at promotion)."""
    client = connect(settings)
    current = alias_version(settings, model, CHAMPION)
    if version is None:
        if current is None:
            raise NoChampionError(f"{model} has no champion to roll back from")
        previous = client.get_model_version(registered_name(model), current.version).tags.get(
            "previous_champion"
        )
        if not previous:
            raise NoChampionError(f"{model} version {current.version} replaced no earlier champion")
        version = previous
    client.get_model_version(registered_name(model), str(version))  # raises when the version does not exist
    set_alias(settings, model, CHAMPION, str(version))
    if current is not None:
        client.set_model_version_tag(
            registered_name(model), str(version), "rolled_back_from", current.version
        )
    ref = alias_version(settings, model, CHAMPION)
    assert ref is not None
    return ref


@dataclass
class LoadedModel:
    ref: ModelRef
    booster: object  # lightgbm.Booster
    features: list[str]
    calibration: dict
    horizon_days: int


def load(settings: Settings, model: str, alias: str = CHAMPION) -> LoadedModel:
    """Load a registered version by alias: the LightGBM booster and its metadata (features, calibration)."""
    ref = alias_version(settings, model, alias)
    if ref is None:
        raise NoChampionError(
            f"{model} has no {alias}: run `memberflow train --model {model}` (a model is promoted to "
            "champion only when it beats the baselines)"
        )
    return _load(ref)


def load_version(settings: Settings, model: str, version: str) -> LoadedModel:
    """Load one registered version (e.g. the one that scored a day, whatever the champion is now)."""
    mv = connect(settings).get_model_version(registered_name(model), version)
    uri = f"models:/{registered_name(model)}/{mv.version}"
    return _load(ModelRef(model, str(mv.version), mv.run_id, uri))


def _load(ref: ModelRef) -> LoadedModel:
    import mlflow.lightgbm
    from mlflow.models import Model

    booster = mlflow.lightgbm.load_model(ref.uri)
    meta = Model.load(ref.uri).metadata or {}
    return LoadedModel(
        ref, booster, list(meta["features"]), dict(meta["calibration"]), int(meta["horizon_days"])
    )
