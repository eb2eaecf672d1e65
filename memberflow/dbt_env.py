"""Where the dbt project, its profile and its outputs live (light: imported by DAG files at parse time)."""

from __future__ import annotations

import os
from pathlib import Path

from memberflow.config import PRIVACY_DEFAULTS, REPO_ROOT, Settings

DBT_PROJECT_DIR = Path(os.environ.get("MEMBERFLOW_DBT_PROJECT") or REPO_ROOT / "dbt_project")


def dbt_home(settings: Settings) -> Path:
    return settings.home / "dbt"


def manifest_path(settings: Settings) -> Path:
    """The parsed project (``dbt parse``) that the transform DAG renders its tasks from."""
    return dbt_home(settings) / "manifest" / "manifest.json"


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
        **PRIVACY_DEFAULTS,
    }


def project_fingerprint() -> str:
    """A hash of the dbt project's source files: a manifest parsed from other files is stale."""
    import hashlib

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
    import subprocess
    import sys

    target = manifest_path(settings)
    stamp = target.with_name("fingerprint")
    fingerprint = project_fingerprint()
    if target.exists() and stamp.exists() and stamp.read_text() == fingerprint:
        return target
    env = {**os.environ, **dbt_environment(settings), "DBT_TARGET_PATH": str(target.parent)}
    args = [str(Path(sys.executable).with_name("dbt")), "parse", "--project-dir", str(DBT_PROJECT_DIR)]
    completed = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    if completed.returncode != 0 or not target.exists():
        tail = "\n".join((completed.stdout + completed.stderr).strip().splitlines()[-15:])
        raise RuntimeError(f"dbt parse failed (exit {completed.returncode}):\n{tail}")
    stamp.write_text(fingerprint)
    return target


def release_dbt_connections() -> None:
    """Close the DuckDB handle that in-process dbt (Cosmos's dbt runner) keeps between invocations.

    A scheduler runs each task in its own process, so this matters only when several tasks share one
    (``dag.test()``): whoever opens the warehouse next must be able to.
    """
    import sys

    if "dbt.adapters.duckdb.connections" not in sys.modules:
        return
    import gc

    from dbt.adapters.duckdb.connections import DuckDBConnectionManager

    DuckDBConnectionManager.close_all_connections()
    gc.collect()
