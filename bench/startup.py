"""What a new process pays before it does any work: importing each pipeline stage's modules, with the
bytecode the setup compiles and without it (every module compiled from source, as happens when
PYTHONDONTWRITEBYTECODE is set and nothing was compiled at install time).

Run: uv run python bench/startup.py [repeats]
Prints, per stage, the median wall time of a fresh interpreter importing what that stage imports, both
ways. Each Airflow task and each stage of the benchmark harness is such a process.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

# what each stage of the daily run imports (its entry points and the libraries they load on first use;
# the build's dbt runs in a child process of its own)
STAGES = {
    "extract": "memberflow.extract, great_expectations",
    "build": "memberflow.transform",
    "build: dbt": "dbt.cli.main, dbt.adapters.duckdb",
    "marts gate": "expectations.marts, great_expectations",
    "score": "ml.score, mlflow.pyfunc, lightgbm",
    "deliver": "memberflow.outreach.run, great_expectations, mlflow.pyfunc, lightgbm",
}


def _import_seconds(modules: str, env: dict[str, str]) -> float:
    began = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import {modules}"], env=env, check=True, capture_output=True)
    return time.perf_counter() - began


def main(repeats: int = 3) -> None:
    compiled = {**os.environ}
    with tempfile.TemporaryDirectory() as empty:
        # Python looks for cached bytecode under an empty prefix and finds none; it writes none either
        from_source = {**os.environ, "PYTHONPYCACHEPREFIX": empty, "PYTHONDONTWRITEBYTECODE": "1"}
        print(f"{'stage':<12} {'bytecode':>10} {'from source':>12}   (median of {repeats} interpreters)")
        totals = [0.0, 0.0]
        for stage, modules in STAGES.items():
            fast = statistics.median(_import_seconds(modules, compiled) for _ in range(repeats))
            slow = statistics.median(_import_seconds(modules, from_source) for _ in range(repeats))
            totals[0] += fast
            totals[1] += slow
            print(f"{stage:<12} {fast:9.1f}s {slow:11.1f}s")
        print(f"{'sum':<12} {totals[0]:9.1f}s {totals[1]:11.1f}s")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
