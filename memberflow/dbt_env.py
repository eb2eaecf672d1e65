"""Where the dbt project, its profile and its outputs live (light: imported by DAG files at parse time)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from memberflow.core.settings import DBT_PROJECT_DIR, PRIVACY_DEFAULTS, Settings

# The dbt of this environment, whatever PATH says (Airflow workers, tests and the CLI share the venv).
DBT_EXECUTABLE = Path(sys.executable).with_name("dbt")
# The project's layers in dependency order, each a selector of dbt_project/selectors.yml: the transform DAG
# runs one `dbt build --selector <layer>` task per layer.
_SELECTORS = yaml.safe_load((DBT_PROJECT_DIR / "selectors.yml").read_text())["selectors"]
BUILD_LAYERS: tuple[str, ...] = tuple(selector["name"] for selector in _SELECTORS)


def dbt_home(settings: Settings) -> Path:
    return settings.home / "dbt"


def manifest_path(settings: Settings) -> Path:
    """The parsed project (``dbt parse``) that the transform DAG renders its tasks from."""
    return dbt_home(settings) / "manifest" / "manifest.json"


def dated_target_path(settings: Settings) -> Path:
    """Where dbt runs with an as-of date or feature dates (``--vars``) write their artifacts: a folder of
    their own. dbt parses the whole project again whenever a run's variables differ from the last run's
    in the same folder; apart, the daily build (no variables) keeps its partial parse after a training run
    or a backfill computed features for other dates."""
    return dbt_home(settings) / "target-dated"


def dbt_environment(settings: Settings) -> dict[str, str]:
    """Environment of every dbt process: profile inputs, outputs under the workspace, no telemetry."""
    home = dbt_home(settings)
    return {
        "MEMBERFLOW_HOME": str(settings.home),
        "MEMBERFLOW_WAREHOUSE": str(settings.warehouse_path),
        "DBT_PROFILES_DIR": str(DBT_PROJECT_DIR),
        "DBT_PROJECT_DIR": str(DBT_PROJECT_DIR),
        "DBT_TARGET_PATH": str(home / "target"),
        "DBT_LOG_PATH": str(home / "logs"),
        "DBT_PACKAGES_INSTALL_PATH": str(home / "packages"),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "PGTZ": "UTC",  # PostgreSQL sessions in UTC, as the DuckDB profile sets
        **PRIVACY_DEFAULTS,
    }


def project_fingerprint() -> str:
    """A hash of the dbt project's source files: a manifest parsed from other files is stale."""
    digest = hashlib.sha256()
    for path in sorted(DBT_PROJECT_DIR.rglob("*")):
        if (
            path.is_file()
            and path.suffix in (".sql", ".yml", ".yaml", ".py", ".csv")
            and "target" not in path.parts
        ):
            digest.update(path.relative_to(DBT_PROJECT_DIR).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def ensure_manifest(settings: Settings) -> Path:
    """The workspace's parsed project, re-parsed (``dbt parse``, a few seconds) when missing or stale."""
    target = manifest_path(settings)
    stamp = target.with_name("fingerprint")
    fingerprint = project_fingerprint()
    if target.exists() and stamp.exists() and stamp.read_text() == fingerprint:
        return target
    completed = run_dbt_process(settings, ["parse"], target_path=target.parent)
    if completed.returncode != 0 or not target.exists():
        raise RuntimeError(f"dbt parse failed (exit {completed.returncode}):\n{output_tail(completed)}")
    stamp.write_text(fingerprint)
    return target


def dbt_args(
    command: Sequence[str], as_of: str | None = None, feature_dates: Sequence[str] = ()
) -> list[str]:
    """``command`` with the project's variables: the build's as-of date and member_features' dates (ISO)."""
    args = list(command)
    dbt_vars: dict[str, object] = {}
    if as_of:
        dbt_vars["as_of_date"] = as_of
    if feature_dates:
        dbt_vars["feature_dates"] = list(feature_dates)
    if dbt_vars:
        args += ["--vars", json.dumps(dbt_vars)]
    return args


def run_dbt_process(
    settings: Settings, args: list[str], target_path: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``dbt <args>`` on the project in a child process with the workspace's environment."""
    env = {**os.environ, **dbt_environment(settings)}
    if target_path is not None:
        env["DBT_TARGET_PATH"] = str(target_path)
    command = [
        str(DBT_EXECUTABLE),
        *args,
        "--project-dir",
        str(DBT_PROJECT_DIR),
        "--profiles-dir",
        str(DBT_PROJECT_DIR),
    ]
    return subprocess.run(command, env=env, capture_output=True, text=True, check=False)


def output_tail(completed: subprocess.CompletedProcess[str], lines: int = 15) -> str:
    return "\n".join((completed.stdout + completed.stderr).strip().splitlines()[-lines:])


def read_run_results(path: Path) -> tuple[int, list[str]]:
    """dbt's run_results.json: how many nodes succeeded or passed, and a line for each that failed or
    errored (skipped and warned nodes are neither)."""
    failures, succeeded = [], 0
    for node in json.loads(path.read_text())["results"]:
        if node["status"] in ("success", "pass"):
            succeeded += 1
        elif node["status"] not in ("skipped", "warn"):
            failures.append(f"{node['unique_id']}: {node['status']} {node.get('message') or ''}".strip())
    return succeeded, failures
