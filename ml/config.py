"""Model settings from ``ml/models.yml``: horizons, cutoff spacing, LightGBM parameters, promotion margins.

``MEMBERFLOW_MODELS_CONFIG`` may name a YAML file of the same shape; it is merged over the defaults (the
``defaults`` block and each model's block key by key, ``lightgbm`` and ``margins`` one level deeper).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from memberflow.core.settings import ConfigError, get_settings
from memberflow.core.vocab import MODELS

CONFIG_PATH = Path(__file__).with_name("models.yml")
# Settings for about two months of history (the demo's sample): 14-day horizons, shorter warm-up.
SHORT_HISTORY = Path(__file__).with_name("short_history.yml")


class ModelConfigError(ConfigError):
    """The models config is unusable; the message names the file and the key."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    horizon_days: int
    about: str
    cutoff_step_days: int
    training_cutoffs: int
    warmup_days: int
    lightgbm: dict[str, Any]
    num_boost_round: int
    early_stopping_rounds: int
    margins: dict[str, dict[str, float]]
    monotone: dict[str, int]
    max_rows_per_cutoff: int = 400_000


def _merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _load(path: Path) -> dict:
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ModelConfigError(f"cannot read the models config {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ModelConfigError(f"{path}: not valid YAML: {exc}") from exc
    unknown = set(raw) - {"defaults", "models"}
    if unknown:
        raise ModelConfigError(
            f"{path}: unknown top-level key {sorted(unknown)[0]!r} (known: defaults, models)"
        )
    for name in raw.get("models") or {}:
        if name not in MODELS:
            raise ModelConfigError(f"{path}: unknown model {name!r} (known: {', '.join(MODELS)})")
    return raw


def _positive(value: Any, key: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(f"{key} must be a positive number of rows, not {value!r}")
    return number


def model_spec(name: str, override: str | Path | None = None) -> ModelSpec:
    """The merged settings of one model."""
    if name not in MODELS:
        raise ModelConfigError(f"unknown model {name!r}: choose one of {', '.join(MODELS)}")
    raw = _load(CONFIG_PATH)
    path = override or get_settings().models_config or None
    sources = [str(CONFIG_PATH)]
    if path:
        raw = _merge(raw, _load(Path(path).expanduser()))
        sources.append(str(path))
    merged = _merge(raw.get("defaults") or {}, (raw.get("models") or {}).get(name) or {})
    try:
        return ModelSpec(
            name=name,
            horizon_days=int(merged["horizon_days"]),
            about=str(merged.get("about", "")),
            cutoff_step_days=int(merged["cutoff_step_days"]),
            training_cutoffs=int(merged["training_cutoffs"]),
            warmup_days=int(merged["warmup_days"]),
            lightgbm=dict(merged["lightgbm"]),
            num_boost_round=int(merged["num_boost_round"]),
            early_stopping_rounds=int(merged["early_stopping_rounds"]),
            margins={k: {m: float(v) for m, v in d.items()} for k, d in merged["margins"].items()},
            monotone={k: int(v) for k, v in (merged.get("monotone") or {}).items()},
            max_rows_per_cutoff=_positive(merged.get("max_rows_per_cutoff", 400_000), "max_rows_per_cutoff"),
        )
    except KeyError as exc:
        raise ModelConfigError(f"{' + '.join(sources)}: models.{name} has no {exc.args[0]}") from exc
    except (TypeError, ValueError) as exc:
        raise ModelConfigError(f"{' + '.join(sources)}: models.{name}: {exc}") from exc
