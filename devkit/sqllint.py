"""sqlfluff over the dbt project with the dbt templater, which compiles each model against a profile and
a workspace: this gives it a throwaway workspace (empty warehouse, the build inputs written) so linting
needs no data and touches no real workspace.

    .venv/bin/python -m devkit.sqllint lint|fix [paths...]     (default: every model in dbt_project/models)

The pre-commit hook and tests/dbt/test_project.py run it; the rules are in dbt_project/.sqlfluff.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from memberflow.core.settings import DBT_PROJECT_DIR, Settings
from memberflow.dbt_env import dbt_environment
from memberflow.transform import write_build_inputs

SQLFLUFF = Path(sys.executable).with_name("sqlfluff")


def run(command: str = "lint", paths: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    targets = [str(Path(p).resolve()) for p in paths] if paths else [str(DBT_PROJECT_DIR / "models")]
    with tempfile.TemporaryDirectory(prefix="memberflow-sqllint-") as home:
        # a fixed key: nothing is tokenized for real, and the workspace is thrown away
        settings = Settings.from_env({"MEMBERFLOW_HOME": home, "MEMBERFLOW_ID_KEY": "sqllint"})
        write_build_inputs(settings)
        env = {**os.environ, **dbt_environment(settings)}
        args = [str(SQLFLUFF), command, *targets, "--processes", "1"]
        if command == "fix":
            args.append("-f")
        return subprocess.run(args, cwd=DBT_PROJECT_DIR, env=env, capture_output=True, text=True, check=False)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devkit.sqllint",
        description="sqlfluff (dbt templater) over the dbt models, in a throwaway workspace.",
    )
    parser.add_argument("command", choices=("lint", "fix"))
    parser.add_argument("paths", nargs="*", help="model files (default: every model)")
    args = parser.parse_args(argv)
    # pre-commit passes the changed files; only models are linted (macros are fragments, not statements)
    paths = [p for p in args.paths if "/models/" in Path(p).resolve().as_posix()]
    if args.paths and not paths:
        return 0
    done = run(args.command, paths or None)
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr)
    return done.returncode


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
