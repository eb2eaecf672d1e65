"""Model summaries for the ops page: champion and challenger of each model, their metrics and plots.

Read from the MLflow registry (aliases, version tags) and the training runs (metrics, PNG artifacts).
MLflow is imported on first use only, and summaries are cached for a minute: the registry changes once a
day, when training runs.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

from memberflow.core.settings import Settings
from ml.registry import CHALLENGER, CHAMPION, alias_version, connect, registered_name

DISPLAY_ORDER = ("churn", "repurchase", "conversion")  # the page's order; the same set as vocab.MODELS
PLOT_NAME = re.compile(r"[a-z0-9_]{1,40}\.png")
CACHE_SECONDS = 60.0


class ModelCatalog:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._cached: tuple[float, list[dict]] | None = None

    def summaries(self) -> list[dict]:
        with self._lock:
            if self._cached and time.monotonic() - self._cached[0] < CACHE_SECONDS:
                return self._cached[1]
            out = [self._summary(m) for m in DISPLAY_ORDER]
            self._cached = (time.monotonic(), out)
            return out

    def _summary(self, model: str) -> dict:
        from ml.monitor import latest_report

        entry: dict = {"model": model, "champion": None, "challenger": None}
        entry["monitoring"] = latest_report(self.settings, model)
        if not self._store_exists():
            return entry
        client = connect(self.settings)
        for alias in (CHAMPION, CHALLENGER):
            ref = alias_version(self.settings, model, alias)
            if ref is None:
                continue
            version = client.get_model_version(registered_name(model), ref.version)
            run = client.get_run(ref.run_id)
            plots = sorted(
                a.path for a in client.list_artifacts(ref.run_id) if PLOT_NAME.fullmatch(a.path or "")
            )
            entry[alias] = {
                "version": ref.version,
                "run_id": ref.run_id,
                "created_at": version.creation_timestamp,
                "decision": version.tags.get("decision"),
                "reason": version.tags.get("reason"),
                "metrics": {k: v for k, v in sorted(run.data.metrics.items()) if k.startswith("model.")},
                "baselines": {
                    k: v for k, v in sorted(run.data.metrics.items()) if not k.startswith("model.")
                },
                "holdout_cutoff": run.data.params.get("holdout_cutoff"),
                "train_rows": run.data.params.get("train_rows"),
                "plots": plots,
            }
        return entry

    def _store_exists(self) -> bool:
        uri = self.settings.mlflow_uri
        if uri.startswith("sqlite:///"):
            return Path(uri.removeprefix("sqlite:///")).exists()
        return True

    def plot(self, model: str, version: str, name: str) -> Path | None:
        """A plot of a registered version, downloaded once into the workspace's cache."""
        if model not in DISPLAY_ORDER or not PLOT_NAME.fullmatch(name) or not version.isdigit():
            return None
        cache = self.settings.home / "api" / "plots" / model / version
        target = cache / name
        if target.is_file():
            return target
        if not self._store_exists():
            return None
        from mlflow.exceptions import MlflowException

        client = connect(self.settings)
        try:
            mv = client.get_model_version(registered_name(model), version)
            if name not in {a.path for a in client.list_artifacts(mv.run_id)}:
                return None
            cache.mkdir(parents=True, exist_ok=True)
            return Path(client.download_artifacts(mv.run_id, name, str(cache)))
        except MlflowException:
            return None
