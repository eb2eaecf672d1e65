"""The import layers of docs/architecture.md hold (the contracts in pyproject.toml), and the check bites: an
upward import planted in a copy of the code breaks it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("memberflow", "ml", "expectations", "devkit")
LINT = Path(sys.executable).with_name("lint-imports")
READS = re.compile(r"os\.environ\.get\(|os\.getenv\(|os\.environ\[[^]]+\](?!\s*=)")


def lint(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT), str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": str(LINT.parent)},
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_code_keeps_its_layers() -> None:
    found = lint(REPO)
    assert found.returncode == 0, found.stdout[-3000:] + found.stderr[-2000:]
    assert "0 broken" in found.stdout


def copy_code(to: Path) -> Path:
    shutil.copy(REPO / "pyproject.toml", to / "pyproject.toml")
    for package in PACKAGES:
        shutil.copytree(REPO / package, to / package, ignore=shutil.ignore_patterns("__pycache__", "web"))
    return to


def test_an_upward_import_breaks_the_check(tmp_path: Path) -> None:
    root = copy_code(tmp_path)
    vocab = root / "memberflow" / "core" / "vocab.py"
    vocab.write_text(
        vocab.read_text() + "\n\ndef late():\n    from memberflow.segments import load_segments\n"
    )
    found = lint(root)
    assert found.returncode != 0
    assert "memberflow.core.vocab -> memberflow.segments" in found.stdout


def test_an_import_cycle_breaks_the_check(tmp_path: Path) -> None:
    root = copy_code(tmp_path)
    evaluate = root / "ml" / "evaluate.py"
    evaluate.write_text(evaluate.read_text() + "\n\ndef late():\n    from ml.train import evaluate\n")
    found = lint(root)
    assert found.returncode != 0
    assert "No cycles are allowed in ml." in found.stdout
    assert ".evaluate -> .train" in found.stdout


def test_only_the_settings_module_reads_the_environment() -> None:
    """Settings come from one reader (memberflow/core/settings.py). The CLI may set variables for the DAG
    runs it starts and dbt's child process inherits the environment: neither reads a setting."""
    allowed = {"memberflow/core/settings.py", "memberflow/dbt_env.py"}
    readers = []
    for package in ("memberflow", "ml", "expectations"):
        for path in sorted((REPO / package).rglob("*.py")):
            name = path.relative_to(REPO).as_posix()
            text = path.read_text(encoding="utf-8")
            if name not in allowed and re.search(
                r"os\.environ\.get\(|os\.getenv\(|os\.environ\[[^]]+\](?!\s*=)", text
            ):
                readers.append(name)
    assert readers == []
