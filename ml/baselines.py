"""Baselines a model must beat on the same held-out rows.

- recency: one number per member, the days since the last relevant event (the classic RFM "R"), turned into
  a probability by the same Platt calibration the model gets;
- BG/NBD (repurchase): the Fader-Hardie-Lee buy-till-you-die model fitted with pymc-marketing on the
  held-out cutoff's purchase history (frequency, recency, age), predicting P(at least one purchase in the
  horizon). Needs no labels, so fitting it on the held-out cutoff leaks nothing.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd

from ml.evaluate import Calibration, fit_calibration

# The recency score per model: larger means more likely to be positive.
RECENCY = {
    "repurchase": lambda f: -f["days_since_last_order"].fillna(10_000).to_numpy(dtype="float64"),
    "churn": lambda f: f["days_since_last_activity"].fillna(10_000).to_numpy(dtype="float64"),
    "conversion": lambda f: -f["days_since_last_activity"].fillna(10_000).to_numpy(dtype="float64"),
}

BGNBD_MAX_FIT_ROWS = 50_000


def recency_score(model: str, frame: pd.DataFrame) -> np.ndarray:
    return RECENCY[model](frame)


def recency_baseline(model: str, tune: pd.DataFrame, test: pd.DataFrame) -> tuple[np.ndarray, Calibration]:
    """Calibrated recency probabilities for the test rows (calibration fitted on the tune rows)."""
    calibration = fit_calibration(recency_score(model, tune), tune["label"].to_numpy())
    return calibration.apply(recency_score(model, test)), calibration


def bgnbd_inputs(frame: pd.DataFrame) -> pd.DataFrame:
    """customer_id, frequency (repeat purchase days), recency (first to last purchase day), T (age), in
    days, from the point-in-time features (so the baseline sees exactly what the model sees)."""
    age = frame["days_since_first_order"].to_numpy(dtype="float64")
    since_last = frame["days_since_last_order"].to_numpy(dtype="float64")
    frequency = np.maximum(frame["purchase_days"].to_numpy(dtype="float64") - 1, 0)
    recency = np.clip(age - since_last, 0, age)
    return pd.DataFrame(
        {
            "customer_id": np.arange(len(frame)),
            "frequency": frequency,
            "recency": np.where(frequency > 0, recency, 0.0),
            "T": age,
        }
    )


def fit_bgnbd(data: pd.DataFrame, seed: int = 7):
    """MAP fit of pymc-marketing's BetaGeoModel (a sample of at most BGNBD_MAX_FIT_ROWS customers)."""
    from pymc_marketing.clv import BetaGeoModel

    if len(data) > BGNBD_MAX_FIT_ROWS:
        data = data.sample(BGNBD_MAX_FIT_ROWS, random_state=seed)
    data = data.assign(customer_id=np.arange(len(data)))
    for name in ("pymc", "pytensor", "pymc_marketing"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = BetaGeoModel(data=data)
        model.fit(method="map", progressbar=False)
    return model


def bgnbd_parameters(model) -> dict[str, float]:
    posterior = model.fit_result  # an xarray Dataset of the MAP point (chain, draw) in this version
    posterior = getattr(posterior, "posterior", posterior)
    return {name: float(posterior[name].values.mean()) for name in ("r", "alpha", "a", "b")}


def bgnbd_probability(model, data: pd.DataFrame, horizon: int) -> np.ndarray:
    """P(at least one purchase in the next ``horizon`` days) for each customer."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        no_purchase = model.expected_probability_no_purchase(t=horizon, data=data)
    values = no_purchase.mean(dim=[d for d in no_purchase.dims if d in ("chain", "draw")]).values
    return np.clip(1.0 - np.asarray(values, dtype="float64"), 0.0, 1.0)


def bgnbd_baseline(fit_frame: pd.DataFrame, test: pd.DataFrame, horizon: int) -> tuple[np.ndarray, dict]:
    """Fit on the held-out cutoff's population, predict the test rows; returns probabilities and params."""
    model = fit_bgnbd(bgnbd_inputs(fit_frame))
    return bgnbd_probability(model, bgnbd_inputs(test), horizon), bgnbd_parameters(model)
