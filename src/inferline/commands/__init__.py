"""CLI sub-commands beyond `run`/`quickstart`: one module per noun, each with `register(app)`.

A new command is one new module here plus its name in `COMMANDS`.
"""

from __future__ import annotations

import importlib

import typer

COMMANDS: tuple[str, ...] = ("models", "serve", "sql", "publish", "report")


def register_all(app: typer.Typer) -> None:
    for name in COMMANDS:
        module = importlib.import_module(f"inferline.commands.{name}")
        module.register(app)
    from inferline.commands.presentation import finish

    finish(app)  # --version, --debug, and help pages without type noise
