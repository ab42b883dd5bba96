"""How the `inferline` command presents itself: `--version`, `--debug` and tidy `--help` pages.

Typer prints each parameter's Python type (`<bool>`, `<list[str]>`) in help and keeps a
docstring's line breaks, which wrap mid-sentence on any terminal wider or narrower than the
source. `finish(app)` makes help show what a user types instead (a METAVAR for options that
take a value, nothing for flags and arguments) and reflows each paragraph to the terminal.
"""

from __future__ import annotations

import inspect
from typing import Annotated, Any

import typer

import inferline

METAVARS = {"str": "TEXT", "int": "INTEGER", "float": "NUMBER"}


def finish(app: typer.Typer) -> None:
    """Add the global options and tidy the help of every command registered on `app` so far.

    Example:
        >>> app = typer.Typer()
        >>> finish(app)  # doctest: +SKIP
    """
    _global_options(app)
    _reflow_help(app)
    _help_without_python_types()


def reflow(text: str) -> str:
    """Each paragraph of `text` on one line (paragraphs are separated by blank lines).

    Example:
        >>> reflow("Run SQL\\non DuckDB.\\n\\nStatements:\\nML.PREDICT.")
        'Run SQL on DuckDB.\\n\\nStatements: ML.PREDICT.'
    """
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(p if p.startswith("\b") else " ".join(p.split()) for p in paragraphs)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"inferline {inferline.__version__}")
        raise typer.Exit()


def _global_options(app: typer.Typer) -> None:
    @app.callback()
    def options(
        version: Annotated[
            bool,
            typer.Option(
                "--version",
                help="Print inferline's version and exit.",
                is_eager=True,
                callback=_print_version,
            ),
        ] = False,
        debug: Annotated[
            bool,
            typer.Option(
                "--debug",
                help="On an error, print the full traceback instead of one line (allowed anywhere "
                "on the command line).",
            ),
        ] = False,
    ) -> None:
        # `inferline.cli.main` takes --debug out of the arguments before Typer parses them, so it
        # also works after a sub-command; it is declared here to be listed in --help.
        del version, debug


def _reflow_help(app: typer.Typer) -> None:
    for command in app.registered_commands:
        text = command.help if command.help is not None else inspect.getdoc(command.callback)
        if text:
            command.help = reflow(text)
    for group in app.registered_groups:
        if group.typer_instance is not None:
            _reflow_help(group.typer_instance)


def _help_without_python_types() -> None:
    # Typer's rich help shows `param.display_type_rich(ctx)` beside each parameter: the Python
    # annotation. Show click's METAVAR (`--limit INTEGER`, or the metavar given) for options
    # that take a value, and nothing for flags and arguments (their name says it).
    from typer.core import TyperArgument, TyperOption

    def option_type(self: TyperOption, ctx: Any) -> str | None:
        if self.is_flag or self.count:
            return None
        if self.metavar:
            return str(self.metavar)
        bare = str(self.bare_type()).removeprefix("list[").removesuffix("]")  # repeatable: one value
        return METAVARS.get(bare, bare.upper())

    def argument_type(self: TyperArgument, ctx: Any) -> str | None:
        return None

    setattr(TyperOption, "display_type_rich", option_type)  # noqa: B010 - on purpose, see above
    setattr(TyperArgument, "display_type_rich", argument_type)  # noqa: B010
