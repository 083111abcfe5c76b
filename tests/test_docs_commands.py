"""Every `python -m <module>` the docs and the deck quote names a module that exists and answers `--help`
with a usage (exit 0): `python -m fruits.matrix`, a library module without a command, exits 0 and does
nothing, so a usage line is required too. In code blocks, which people paste, a project module runs as
`PYTHONPATH=plugins .venv/bin/python -m ...` from the repository root. One `--help` per module, no JVM."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = sorted({REPO / "README.md", REPO / "infra" / "README.md", *(REPO / "docs").rglob("*.md")})
# A module name followed by anything but a placeholder (`fruits.cli.<cmd>` is not a command).
COMMAND = re.compile(r"python3? -m ((?:[A-Za-z_]\w*)(?:\.[A-Za-z_]\w*)*)(?![\w.<])")
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)
PASTEABLE = "PYTHONPATH=plugins .venv/bin/python -m "
PROJECT_PACKAGES = ("fruits",)
VENV_PYTHON = REPO / ".venv" / "bin" / "python"


def quoted_modules() -> dict[str, list[str]]:
    """{module: ["page:line", ...]} over every page."""
    found: dict[str, list[str]] = {}
    for page in PAGES:
        for number, line in enumerate(page.read_text().splitlines(), 1):
            for module in COMMAND.findall(line):
                found.setdefault(module, []).append(f"{page.relative_to(REPO)}:{number}")
    return found


QUOTED = quoted_modules()


def test_the_docs_quote_the_project_commands():
    # The scan itself works: the runbook's commands are found (a broken pattern would pass everything).
    assert {"fruits.cli.costs", "fruits.cli.erase", "fruits.release"} <= set(QUOTED)


@pytest.mark.parametrize("module", sorted(QUOTED))
def test_every_quoted_module_runs_its_help(module):
    python = str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable
    environment = {**os.environ, "PYTHONPATH": "plugins"}
    result = subprocess.run(
        [python, "-m", module, "--help"], cwd=REPO, env=environment, capture_output=True, text=True, timeout=120
    )
    where = ", ".join(QUOTED[module])
    assert result.returncode == 0, f"`python -m {module} --help` failed (quoted at {where}):\n{result.stderr[-2000:]}"
    assert "usage:" in result.stdout, f"`python -m {module}` is no command (quoted at {where}): no usage printed"


def test_code_blocks_run_project_modules_from_the_repository_root():
    loose = []
    for page in PAGES:
        for block in FENCE.findall(page.read_text()):
            for line in block.splitlines():
                for match in COMMAND.finditer(line):
                    is_project = match.group(1).split(".")[0] in PROJECT_PACKAGES
                    if is_project and not line[: match.end()].endswith(PASTEABLE + match.group(1)):
                        loose.append(f"{page.relative_to(REPO)}: {line.strip()}")
    assert not loose, f"write these as `{PASTEABLE}...`:\n" + "\n".join(loose)
