"""The person-facing commands: each describes itself and every option in --help, and none of them is imported
by what an Airflow worker loads (the DAG's modules, or Airflow's plugin loader walking plugins/)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from fruits import release
from fruits.cli import costs, demo, erase, matrix, upload

REPO = Path(__file__).resolve().parents[1]
PARSERS = {
    "fruits.cli.costs": costs.build_parser,
    "fruits.cli.erase": erase.build_parser,
    "fruits.cli.upload": upload.build_parser,
    "fruits.cli.upload audit": upload.build_audit_parser,
    "fruits.cli.matrix": matrix.build_parser,
}


def _parsers(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    """The parser and every subcommand's, by name."""
    found = [(parser.prog, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += [(f"{parser.prog} {name}", sub)]
    return found


def _undocumented(parser: argparse.ArgumentParser) -> list[str]:
    missing = [] if parser.description else ["(no description)"]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            missing += [f"subcommand {c.dest}" for c in action._choices_actions if not c.help]
        elif not isinstance(action, argparse._HelpAction) and not action.help:
            missing.append("/".join(action.option_strings) or action.dest)
    return missing


@pytest.mark.parametrize("module", sorted(PARSERS))
def test_every_command_and_option_says_what_it_is_for(module):
    for prog, parser in _parsers(PARSERS[module]()):
        assert prog.startswith(f"python -m {module}"), prog  # --help shows how to run it
        assert _undocumented(parser) == [], f"{prog}: options without help"


def test_the_release_and_demo_commands_document_every_option(monkeypatch, capsys):
    for main in (release.main, demo.main):
        with pytest.raises(SystemExit) as done:
            main(["--help"])
        assert done.value.code == 0
    out = capsys.readouterr().out
    for option in ("--batch", "--landing", "--lake", "--airflow-home", "publish-wheelhouse", "publish-weights"):
        assert option in out
    sub = [p for _, p in _parsers(_release_parser(monkeypatch))]
    assert all(_undocumented(p) == [] for p in sub[1:]), [_undocumented(p) for p in sub]


def _release_parser(monkeypatch) -> argparse.ArgumentParser:
    """release.main builds its parser inline: catch it as parse_args is called."""
    caught = {}

    def stop(self, *args, **kwargs):
        caught["parser"] = self
        raise SystemExit(0)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", stop)
    with pytest.raises(SystemExit):
        release.main([])
    return caught["parser"]


def test_help_runs_as_a_command_with_only_plugins_on_the_path():
    for module in [*PARSERS, "fruits.cli.demo"]:
        done = subprocess.run(
            [sys.executable, "-m", *module.split(), "--help"],  # a subcommand: "<module> <name>"
            cwd=REPO,
            capture_output=True,
            text=True,
            env={"PYTHONPATH": str(REPO / "plugins"), "PATH": "/usr/bin:/bin"},
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert f"python -m {module}" in done.stdout


def test_airflows_plugin_loader_skips_the_commands():
    """Airflow imports every .py under plugins/ not matched by plugins/.airflowignore (its plugins_manager)."""
    from airflow._shared.module_loading import find_path_from_directory

    loaded = {
        Path(f).relative_to(REPO / "plugins").as_posix()
        for f in find_path_from_directory(str(REPO / "plugins"), ".airflowignore", "glob")
    }
    assert "fruits/pipeline_tasks.py" in loaded  # the loader does walk the package
    assert not [f for f in loaded if f.startswith("fruits/cli/")]


def test_the_dags_modules_never_import_the_commands():
    code = (
        "import sys, pkgutil, importlib, fruits\n"
        "for m in pkgutil.iter_modules(fruits.__path__):\n"
        "    if m.name != 'cli': importlib.import_module('fruits.' + m.name)\n"
        "print(sorted(n for n in sys.modules if n.startswith('fruits.cli')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(REPO / "plugins"), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
