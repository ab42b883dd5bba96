"""What `inferline --help`, `--version` and every command's help page show a user."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import typer
from typer.core import TyperGroup
from typer.testing import CliRunner

import inferline
from inferline.cli import app
from inferline.sql.bigquery import SUPPORTED_ML
from inferline.sql.functions import OUTPUTS
from tests.conftest import subprocess_env

TYPE_NOISE = re.compile(r"<(bool|str|int|float|list\[[^\]]*\]|[A-Za-z_]+)>")


def inferline_cli(*args: str, columns: int = 100) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "inferline", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=subprocess_env({"COLUMNS": str(columns), "TERMINAL_WIDTH": str(columns)}),
    )


def every_command() -> list[tuple[str, ...]]:
    """Each command path, e.g. ("run",), ("models", "add"), from the CLI's own command tree."""
    paths: list[tuple[str, ...]] = [()]

    def walk(group: TyperGroup, prefix: tuple[str, ...]) -> None:
        for name, command in group.commands.items():
            paths.append((*prefix, name))
            if isinstance(command, TyperGroup):
                walk(command, (*prefix, name))

    root = typer.main.get_command(app)
    assert isinstance(root, TyperGroup)
    walk(root, ())
    return paths


def help_page(path: tuple[str, ...], columns: int) -> str:
    # COLUMNS only: Typer reads TERMINAL_WIDTH once, when it first renders help in this process.
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.output
    return result.output


def test_version_and_global_options() -> None:
    version = inferline_cli("--version")
    assert (version.returncode, version.stdout, version.stderr) == (
        0,
        f"inferline {inferline.__version__}\n",
        "",
    )
    top = inferline_cli("--help")
    assert top.returncode == 0
    assert re.search(r"--version\s+Print inferline's version and exit\.", top.stdout)
    assert re.search(r"--debug\s+On an error, print the full traceback instead of one line", top.stdout)
    assert not TYPE_NOISE.search(top.stdout), top.stdout


def test_debug_from_help_works_before_and_after_the_command(tmp_path: object) -> None:
    for args in (("--debug", "run", "missing.yaml"), ("run", "missing.yaml", "--debug")):
        result = inferline_cli(*args)
        assert result.returncode == 1
        assert "Traceback (most recent call last)" in result.stderr
        assert result.stderr.rstrip().splitlines()[-1].startswith("error: missing.yaml")


def test_no_command_shows_python_types_in_its_help() -> None:
    paths = every_command()
    assert {("run",), ("sql",), ("serve",), ("models", "add")} <= set(paths)
    for path in paths:
        page = help_page(path, 100)
        assert not TYPE_NOISE.search(page), f"inferline {' '.join(path)} --help:\n{page}"
    run = help_page(("run",), 100)
    assert re.search(r"--limit\s+INTEGER\s+Stop after reading N rows\.", run)
    assert re.search(r"--progress\s+--no-progress\s+Show a progress bar", run)  # a flag: no type


def test_help_sentences_are_not_broken_mid_line() -> None:
    # On a terminal wide enough for every paragraph, each description line is a whole paragraph,
    # so it ends where a sentence or a list ends, never in the middle of one.
    for path in every_command():
        page = help_page(path, 1000)
        description = page.split("Usage:", 1)[1].split("╭", 1)[0]
        lines = [line.strip() for line in description.splitlines()[1:] if line.strip()]
        assert lines, page
        broken = [line for line in lines if not line.endswith((".", ":", ")", "]"))]
        assert not broken, f"inferline {' '.join(path)} --help breaks lines mid-sentence: {broken}"


@pytest.mark.parametrize("columns", [80, 200])
def test_sql_help_lists_every_supported_statement_and_function(columns: int) -> None:
    page = " ".join(inferline_cli("sql", "--help", columns=columns).stdout.replace("│", " ").split())
    for function in SUPPORTED_ML:
        assert f"ML.{function}" in page, function
    for statement in (
        "CREATE [OR REPLACE] EXTERNAL TABLE",
        "CREATE [OR REPLACE] MODEL",
        "REMOTE WITH CONNECTION",
        "DROP MODEL [IF EXISTS]",
        "EXTERNAL_OBJECT_TRANSFORM(",
    ):
        assert statement in page, statement
    for function in (*OUTPUTS, "decode_image"):
        assert f"{function}(" in page, function
