"""The dependency direction of CONVENTIONS.md and the house lint, checked on every test run."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str) -> str:
    exe = Path(sys.executable).with_name(name)
    return str(exe) if exe.exists() else (shutil.which(name) or name)


def test_import_contracts_hold():
    done = subprocess.run(
        [_tool("lint-imports"), "--no-cache"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_ruff_finds_no_lint_errors():
    done = subprocess.run(
        [_tool("ruff"), "check", "data_specs", "pipelines", "hamfin", "strategies", "tests"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_only_the_backtest_door_imports_vectorbt():
    offenders = []
    for path in sorted((ROOT / "strategies").rglob("*.py")):
        if path.name == "backtest.py":
            continue
        text = path.read_text()
        if "import vectorbt" in text or "from vectorbt" in text:
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == [], f"vectorbt imported outside strategies/backtest.py: {offenders}"
