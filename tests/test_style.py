"""The code's habits, checked like behaviour: lint, Python format and Snakemake format.

The tools are pinned in pyproject.toml's ``test`` extra (another version formats differently).
Fix a failure with ``.venv/bin/ruff check --fix .``, ``.venv/bin/ruff format .`` and
``.venv/bin/snakefmt Snakefile workflow``.
"""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

CHECKS = {
    "ruff check": [str(BIN / "ruff"), "check", "--no-cache", "."],
    "ruff format": [str(BIN / "ruff"), "format", "--check", "--no-cache", "."],
    "snakefmt": [str(BIN / "snakefmt"), "--check", "Snakefile", "workflow"],
}


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_code_passes(name: str) -> None:
    cmd = CHECKS[name]
    if not Path(cmd[0]).is_file():
        pytest.fail(f"{cmd[0]} is missing: install the test extra (pip install -e '.[test]')")
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
