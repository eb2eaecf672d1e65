"""MLflow: one experiment per model, a registered model per model, aliases ``champion`` and ``challenger``.

The default store is SQLite plus local artifacts under ``$MEMBERFLOW_HOME/mlflow``; ``MEMBERFLOW_MLFLOW_URI``
points it at a shared server instead. A version is a calibrated pyfunc written as MLflow "models from code"
(``ml/champion_model.py``, the booster in LightGBM's text format as its artifact): loading it runs no pickle,
and ``mlflow.pyfunc.load_model(...).predict`` gives the probabilities ``member_scores`` holds. Rolling back
is moving the ``champion`` alias to an earlier version.
"""

from __future__ import annotations

import contextlib
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
    if settings.mlflow_uri_env is None:
        follow_workspace(settings)
    mlflow.set_tracking_uri(settings.mlflow_uri)
    mlflow.set_registry_uri(settings.mlflow_uri)
    return MlflowClient(settings.mlflow_uri, settings.mlflow_uri)


# The workspace's store records artifact locations as absolute file URIs (MLflow has no relative form).
# This file says which artifacts folder they point at, so a moved or copied workspace notices.
ARTIFACTS_ROOT_FILE = "artifacts-root"
# Where the SQLite store keeps artifact URIs.
ARTIFACT_COLUMNS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("logged_models", "artifact_location"),
    ("model_versions", "storage_location"),
)


def follow_workspace(settings: Settings) -> None:
    """Make the workspace's MLflow store point at its own artifacts folder.

    MLflow writes absolute artifact URIs into its database, so a workspace that was moved, or copied to
    make a second one, would read and write the artifacts of the folder it came from. When the recorded
    folder is not this workspace's, every stored URI under it is rewritten to this one (one SQLite
    transaction), before MLflow opens the store."""
    import sqlite3

    here = (settings.mlflow_dir / "artifacts").resolve().as_uri()
    marker = settings.mlflow_dir / ARTIFACTS_ROOT_FILE
    db = settings.mlflow_dir / "mlflow.db"
    recorded = marker.read_text().strip() if marker.exists() else None
    if recorded == here:
        return
    if db.exists():
        with contextlib.closing(sqlite3.connect(db)) as con, con:
            if recorded is None:  # a store made before the marker: read the root off an experiment
                row = con.execute(
                    "select artifact_location from experiments where artifact_location like 'file://%/artifacts/%'"
                ).fetchone()
                recorded = row[0].rsplit("/artifacts/", 1)[0] + "/artifacts" if row else None
            if recorded is not None and recorded != here:
                tables = {r[0] for r in con.execute("select name from sqlite_master where type = 'table'")}
                for table, column in ARTIFACT_COLUMNS:
                    if table in tables:
                        con.execute(
                            f"update {table} set {column} = ? || substr({column}, ?) "
                            f"where substr({column}, 1, ?) = ? and substr({column}, ?, 1) in ('', '/')",
                            (here, len(recorded) + 1, len(recorded), recorded, len(recorded) + 1),
                        )
    marker.write_text(here + "\n")


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
    """The version's booster and metadata. A version is the calibrated pyfunc of ``ml/champion_model.py``
    (its booster is what scoring and TreeSHAP use); versions registered before that are plain LightGBM."""
    import mlflow.lightgbm
    import mlflow.pyfunc
    from mlflow.models import Model

    registered = Model.load(ref.uri)
    if "lightgbm" in registered.flavors:
        booster = mlflow.lightgbm.load_model(ref.uri)
    else:
        booster = mlflow.pyfunc.load_model(ref.uri).unwrap_python_model().booster
    meta = registered.metadata or {}
    return LoadedModel(
        ref, booster, list(meta["features"]), dict(meta["calibration"]), int(meta["horizon_days"])
    )
