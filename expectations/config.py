"""Severity and thresholds of the quality checks: ``quality.yml`` next to this file, overridden by the YAML
file named in ``MEMBERFLOW_QUALITY_CONFIG`` (merged key by key). A check is looked up as
``<gate>.tables.<subject>.<check>`` over ``<gate>.checks.<check>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from memberflow.core.settings import ConfigError, get_settings

DEFAULTS_FILE = Path(__file__).with_name("quality.yml")
SEVERITIES = ("critical", "warning", "off")


def _merge(base: dict, override: Mapping, where: str, source: Path) -> dict:
    merged = dict(base)
    for key, value in override.items():
        if key not in base:
            raise ConfigError(f"{source}: unknown setting {where}{key}")
        if isinstance(base[key], dict) and isinstance(value, Mapping):
            merged[key] = _merge(base[key], value, f"{where}{key}.", source)
        else:
            merged[key] = value
    return merged


@dataclass(frozen=True)
class QualityConfig:
    data: dict
    sources: tuple[str, ...]

    @classmethod
    def load(cls, override: str | Path | None = None) -> QualityConfig:
        """The defaults, merged with the override file (argument, else MEMBERFLOW_QUALITY_CONFIG)."""
        data = yaml.safe_load(DEFAULTS_FILE.read_text())
        sources = [str(DEFAULTS_FILE)]
        path = override or get_settings().quality_config or None
        if path:
            path = Path(path).expanduser()
            if not path.is_file():
                raise ConfigError(f"MEMBERFLOW_QUALITY_CONFIG: no such file {path}")
            try:
                extra = yaml.safe_load(path.read_text()) or {}
            except yaml.YAMLError as exc:
                raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
            if not isinstance(extra, Mapping):
                raise ConfigError(f"{path}: expected a mapping of gates at the top level")
            for gate, section in extra.items():
                if gate not in data:
                    raise ConfigError(f"{path}: unknown gate {gate!r} (known: {', '.join(data)})")
                section = section or {}
                checks = _merge(data[gate]["checks"], section.get("checks") or {}, f"{gate}.checks.", path)
                tables = dict(data[gate].get("tables") or {})
                for subject, overrides in (section.get("tables") or {}).items():
                    for check in overrides or {}:
                        if check not in checks:
                            raise ConfigError(f"{path}: unknown check {gate}.tables.{subject}.{check}")
                    tables[subject] = {**tables.get(subject, {}), **(overrides or {})}
                unknown = set(section) - {"checks", "tables"}
                if unknown:
                    raise ConfigError(f"{path}: unknown setting {gate}.{sorted(unknown)[0]}")
                data[gate] = {"checks": checks, "tables": tables}
            sources.append(str(path))
        config = cls(data, tuple(sources))
        config._validate()
        return config

    def _validate(self) -> None:
        for section in self.data.values():
            # YAML 1.1 reads a bare `off` as false: accept it as the severity it obviously means
            blocks = [*section["checks"].values()]
            blocks += [v for t in (section.get("tables") or {}).values() for v in (t or {}).values()]
            for block in blocks:
                if isinstance(block, dict) and block.get("severity") is False:
                    block["severity"] = "off"
        for gate, section in self.data.items():
            entries = [(f"{gate}.checks.{k}", v) for k, v in section["checks"].items()]
            for subject, overrides in (section.get("tables") or {}).items():
                for check, value in (overrides or {}).items():
                    merged = {**section["checks"][check], **(value or {})}
                    entries.append((f"{gate}.tables.{subject}.{check}", merged))
            for where, value in entries:
                if not isinstance(value, Mapping) or value.get("severity") not in SEVERITIES:
                    raise ConfigError(
                        f"{' + '.join(self.sources)}: {where}.severity must be one of {', '.join(SEVERITIES)}"
                    )

    def check(self, gate: str, subject: str, check: str) -> dict[str, Any]:
        """Settings of one check for one table or mart: severity plus its thresholds."""
        section = self.data[gate]
        base = section["checks"][check]
        overrides = (section.get("tables") or {}).get(subject, {}).get(check) or {}
        return _merge(base, overrides, f"{gate}.tables.{subject}.{check}.", Path(self.sources[-1]))
