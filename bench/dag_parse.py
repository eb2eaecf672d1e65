"""How long each DAG file takes to parse, as the DAG processor would (fresh interpreter per file).

Run: uv run python bench/dag_parse.py [repeats]
Prints, per DAG file, the median wall time of DagBag parsing the file alone, excluding interpreter start
and the `import airflow` that every DAG processor has already paid for.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

DAGS = Path(__file__).resolve().parents[1] / "dags"
PROBE = """
import json, sys, time
import airflow.sdk  # already loaded in a real DAG processor
from airflow.dag_processing.dagbag import DagBag
began = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1])
seconds = time.perf_counter() - began
print(json.dumps({"seconds": seconds, "errors": bag.import_errors, "dags": len(bag.dags)}))
"""


def main(repeats: int = 5) -> None:
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "AIRFLOW_HOME": home, "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
        for path in sorted(DAGS.glob("*.py")):
            runs = []
            for _ in range(repeats):
                out = (
                    subprocess.run(
                        [sys.executable, "-c", PROBE, str(path)],
                        env=env,
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                    .stdout.strip()
                    .splitlines()[-1]
                )
                runs.append(json.loads(out))
            if runs[0]["errors"]:
                print(f"{path.name}: import errors {runs[0]['errors']}")
                continue
            ms = [r["seconds"] * 1000 for r in runs]
            print(
                f"{path.name}: {runs[0]['dags']} DAG(s), parse median {statistics.median(ms):.0f} ms "
                f"(min {min(ms):.0f}, max {max(ms):.0f}, {repeats} runs)"
            )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
