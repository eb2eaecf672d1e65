"""The report models (the ops dashboards) as ops read them: which reports exist, what each column is called
in Chinese and English and how its values are shown, and a report's rows.

The definitions live beside the SQL, in the dbt project (``models/marts/reports/_reports__models.yml``):
each report and column carries ``meta.label`` (zh, en) and ``meta.unit``. A unit ``vocab:<group>`` means
the values are codes with labels in :mod:`memberflow.core.vocab`; ``meta.values`` labels codes the report
itself makes up (e.g. ``none``, a member not yet seen a week before).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import yaml

from memberflow.core.settings import DBT_PROJECT_DIR, ConfigError
from memberflow.core.vocab import label
from memberflow.warehouse import table_names

REPORTS_FILE = DBT_PROJECT_DIR / "models" / "marts" / "reports" / "_reports__models.yml"
UNITS = ("count", "share", "cny", "minutes", "days", "ratio", "date", "text", "bool")
LANGS = ("zh", "en")


class ReportError(LookupError):
    """No such report, or it is not built yet (HTTP 404); the message says which."""


@dataclass(frozen=True)
class Column:
    name: str
    label: dict[str, str]
    unit: str
    values: dict[str, dict[str, str]]  # labels of codes the report makes up

    def value_label(self, value: Any, lang: str) -> str | None:
        """A code's label in ``lang``, or None for a column whose values are shown as they are."""
        if value is None or not (self.unit.startswith("vocab:") or self.values):
            return None
        own = self.values.get(str(value))
        if own is not None:
            return own[lang]
        return label(self.unit.removeprefix("vocab:"), str(value), lang)


@dataclass(frozen=True)
class Report:
    name: str  # the report model, e.g. report_checkin_camps
    label: dict[str, str]
    description: str
    order_by: str
    columns: tuple[Column, ...]

    @property
    def key(self) -> str:
        """The report's name in URLs: the model name without ``report_``."""
        return self.name.removeprefix("report_")


def _both(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, dict) or set(value) != set(LANGS) or not all(value.values()):
        raise ConfigError(f"{REPORTS_FILE.name}: {where} needs meta.label in zh and en: {{zh: ..., en: ...}}")
    return {lang: str(value[lang]) for lang in LANGS}


def load_reports(path: Path = REPORTS_FILE) -> dict[str, Report]:
    """Every report model with its labels, by key (``checkin_camps``); a label or unit missing stops here."""
    found: dict[str, Report] = {}
    for model in yaml.safe_load(path.read_text(encoding="utf-8"))["models"]:
        meta = model.get("meta") or {}
        columns = []
        for col in model.get("columns", []):
            col_meta = col.get("meta") or {}
            where = f"{model['name']}.{col['name']}"
            unit = col_meta.get("unit")
            if unit not in UNITS and not str(unit).startswith("vocab:"):
                units = ", ".join(UNITS)
                raise ConfigError(f"{path.name}: {where} needs meta.unit, one of {units} or vocab:<group>")
            own = col_meta.get("values") or {}
            values = {str(k): _both(v, f"{where} value {k}") for k, v in own.items()}
            columns.append(Column(col["name"], _both(col_meta.get("label"), where), unit, values))
        report = Report(
            model["name"],
            _both(meta.get("label"), model["name"]),
            " ".join(str(model.get("description", "")).split()),
            str(meta.get("order_by") or columns[0].name),
            tuple(columns),
        )
        found[report.key] = report
    return found


REPORTS: dict[str, Report] = load_reports()


def get_report(key: str) -> Report:
    try:
        return REPORTS[key]
    except KeyError:
        raise ReportError(f"no report {key!r}; reports: {', '.join(REPORTS)}") from None


def observed_through(con) -> date | None:
    """The last day the built reports count (int_report_period), or None before the first build."""
    if "int_report_period" not in table_names(con):
        return None
    row = con.execute("select observed_through from int_report_period").fetchone()
    return None if row is None else row[0]


def read_report(con, key: str, lang: str) -> dict[str, Any]:
    """One report's rows with its columns' labels in ``lang`` and each code's label (``value_labels``)."""
    report = get_report(key)
    if report.name not in table_names(con):
        raise ReportError(f"{report.name} is not built yet: run the pipeline (memberflow run) first")
    names = [c.name for c in report.columns]
    # names and order from the report definitions, never from the request
    cursor = con.execute(f"select {', '.join(names)} from {report.name} order by {report.order_by}")
    rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    value_labels: dict[str, dict[str, str]] = {}
    for column in report.columns:
        for row in rows:
            text = column.value_label(row[column.name], lang)
            if text is not None:
                value_labels.setdefault(column.name, {})[str(row[column.name])] = text
    return {
        "name": report.key,
        "label": report.label[lang],
        "description": report.description,
        "observed_through": observed_through(con),
        "columns": [{"name": c.name, "label": c.label[lang], "unit": c.unit} for c in report.columns],
        "value_labels": value_labels,
        "rows": rows,
    }
