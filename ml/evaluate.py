"""Metrics, calibration and the evaluation plots every model and baseline gets on the held-out cutoff."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Calibration:
    """Platt scaling of a raw score: p = 1 / (1 + exp(-(slope * score + intercept))).

    Monotone, so it keeps the ranking (AUC) of the score, and two numbers store as JSON, not a pickle.
    """

    slope: float
    intercept: float

    def apply(self, score: np.ndarray) -> np.ndarray:
        z = self.slope * np.asarray(score, dtype="float64") + self.intercept
        return 1.0 / (1.0 + np.exp(-np.clip(z, -35, 35)))

    def as_dict(self) -> dict[str, float]:
        return {"method": "platt", "slope": self.slope, "intercept": self.intercept}

    @classmethod
    def from_dict(cls, raw: dict) -> Calibration:
        return cls(float(raw["slope"]), float(raw["intercept"]))


def fit_calibration(score: np.ndarray, label: np.ndarray) -> Calibration:
    """Fit Platt scaling on held-out rows (near-unregularized logistic regression on the one score)."""
    from sklearn.linear_model import LogisticRegression

    x = np.asarray(score, dtype="float64").reshape(-1, 1)
    fitted = LogisticRegression(C=1e6, max_iter=1000).fit(x, np.asarray(label))
    return Calibration(float(fitted.coef_[0, 0]), float(fitted.intercept_[0]))


def expected_calibration_error(label: np.ndarray, prob: np.ndarray, bins: int = 10) -> float:
    """ECE over equal-width probability bins: the row-weighted mean |observed rate - mean probability|."""
    label, prob = np.asarray(label, dtype="float64"), np.asarray(prob, dtype="float64")
    which = np.minimum((prob * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.sum() * abs(label[mask].mean() - prob[mask].mean())
    return float(total / len(label))


def lift_at(label: np.ndarray, prob: np.ndarray, share: float = 0.1) -> float:
    """Label rate in the top ``share`` of scores over the overall rate."""
    label = np.asarray(label, dtype="float64")
    k = max(1, round(len(label) * share))
    top = np.argsort(-np.asarray(prob), kind="stable")[:k]
    rate = label.mean()
    return float(label[top].mean() / rate) if rate > 0 else float("nan")


def metrics(label: np.ndarray, prob: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

    return {
        "auc": float(roc_auc_score(label, prob)),
        "pr_auc": float(average_precision_score(label, prob)),
        "brier": float(brier_score_loss(label, prob)),
        "lift_top_decile": lift_at(label, prob, 0.1),
        "ece": expected_calibration_error(label, prob),
        "label_rate": float(np.mean(label)),
        "rows": float(len(label)),
    }


MAX_CURVE_POINTS = 2000


def _thin(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """At most MAX_CURVE_POINTS evenly spaced points of a curve (a million-row curve draws no better)."""
    n = len(arrays[0])
    if n <= MAX_CURVE_POINTS:
        return arrays
    keep = np.unique(np.linspace(0, n - 1, MAX_CURVE_POINTS).astype(int))
    return tuple(a[keep] for a in arrays)


def plot_all(
    folder: Path,
    label: np.ndarray,
    probs: dict[str, np.ndarray],
    title: str,
    importance: dict[str, float] | None = None,
) -> list[Path]:
    """ROC, PR, calibration, cumulative gain and lift, and feature importance, as PNG files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import precision_recall_curve, roc_curve

    folder.mkdir(parents=True, exist_ok=True)
    label = np.asarray(label)
    written: list[Path] = []

    def save(fig, name: str) -> None:
        fig.tight_layout()
        path = folder / name
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, prob in probs.items():
        fpr, tpr, _ = roc_curve(label, prob)
        ax.plot(*_thin(fpr, tpr), label=name)
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC — {title}")
    ax.legend(loc="lower right")
    save(fig, "roc.png")

    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, prob in probs.items():
        precision, recall, _ = precision_recall_curve(label, prob)
        ax.plot(*_thin(recall, precision), label=name)
    ax.axhline(label.mean(), linestyle=":", color="grey")
    ax.set(xlabel="recall", ylabel="precision", title=f"Precision-recall — {title}")
    ax.legend(loc="upper right")
    save(fig, "pr.png")

    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, prob in probs.items():
        observed, predicted = calibration_curve(label, prob, n_bins=10, strategy="quantile")
        ax.plot(predicted, observed, marker="o", label=name)
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set(xlabel="mean predicted probability", ylabel="observed rate", title=f"Calibration — {title}")
    ax.legend(loc="upper left")
    save(fig, "calibration.png")

    fig, (gain_ax, lift_ax) = plt.subplots(1, 2, figsize=(10, 4.5))
    share = np.arange(1, len(label) + 1) / len(label)
    for name, prob in probs.items():
        ordered = label[np.argsort(-np.asarray(prob), kind="stable")]
        gain = np.cumsum(ordered) / max(ordered.sum(), 1)
        x, g = _thin(share, gain)
        gain_ax.plot(x, g, label=name)
        lift_ax.plot(x, g / x, label=name)
    gain_ax.plot([0, 1], [0, 1], ":", color="grey")
    gain_ax.set(
        xlabel="share of members contacted", ylabel="share of positives reached", title="Cumulative gain"
    )
    lift_ax.axhline(1, linestyle=":", color="grey")
    lift_ax.set(xlabel="share of members contacted", ylabel="lift", title="Lift", ylim=(0, None))
    gain_ax.legend(loc="lower right")
    save(fig, "gain_lift.png")

    if importance:
        top = sorted(importance.items(), key=lambda kv: kv[1], reverse=True)[:20]
        fig, ax = plt.subplots(figsize=(6.5, 6))
        ax.barh([k for k, _ in reversed(top)], [v for _, v in reversed(top)])
        ax.set(xlabel="total gain", title=f"Feature importance — {title}")
        save(fig, "feature_importance.png")
    return written
