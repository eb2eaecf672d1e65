"""The registered form of a memberflow model: MLflow "models from code".

MLflow stores this file with each registered version and runs it when the version is loaded, so no pickle is
involved. ``mlflow.pyfunc.load_model("models:/memberflow-churn@champion").predict(frame)`` gives the
calibrated probabilities that ``member_scores`` holds: the LightGBM booster's raw score through the Platt
calibration fitted at training (``ml.evaluate.Calibration``; the same two numbers, kept in the version's
``model_config``). The file imports nothing from memberflow, so a serving environment with MLflow,
LightGBM and pandas loads it.
"""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel


class CalibratedBooster(PythonModel):
    def load_context(self, context) -> None:
        import lightgbm

        self.booster = lightgbm.Booster(model_file=context.artifacts["booster"])
        config = context.model_config
        self.features = list(config["features"])
        self.slope = float(config["calibration"]["slope"])
        self.intercept = float(config["calibration"]["intercept"])

    def predict(self, context, model_input, params=None) -> np.ndarray:
        """Calibrated probabilities of the rows of ``model_input`` (a frame holding the model's features;
        categorical features as strings or pandas categories)."""
        frame = pd.DataFrame(model_input)[self.features].copy()
        for column in frame.columns:
            dtype = frame[column].dtype
            if not (pd.api.types.is_numeric_dtype(dtype) or isinstance(dtype, pd.CategoricalDtype)):
                frame[column] = frame[column].astype("category")  # LightGBM maps it to training's codes
        raw = self.booster.predict(frame, raw_score=True, num_threads=1)
        z = self.slope * np.asarray(raw, dtype="float64") + self.intercept
        return 1.0 / (1.0 + np.exp(-np.clip(z, -35, 35)))


mlflow.models.set_model(CalibratedBooster())
