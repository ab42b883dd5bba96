"""The `inferline` command. Errors print as one line (`--debug` shows the traceback)."""

from __future__ import annotations

import signal
import sys
import threading
import traceback
from typing import Annotated, Any

import typer
from rich.console import Console

from inferline.commands import register_all
from inferline.errors import InferlineError

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Run trained ML models over files, tables, streams, SQL and HTTP.",
)
err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def run(
    ctx: typer.Context,
    pipeline: Annotated[str, typer.Argument(help="Pipeline YAML file.")],
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a spec value: dotted.key=value.")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Stop after reading N rows.")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar on a terminal.")] = True,
    until_idle: Annotated[
        float | None, typer.Option(help="Streams: stop after SECONDS with no message.")
    ] = None,
    max_messages: Annotated[int | None, typer.Option(help="Streams: stop after N messages.")] = None,
    stats_every: Annotated[
        float | None, typer.Option(help="Streams: print msg/s, latency p50/p99 and backlog every SECONDS.")
    ] = None,
    broker_timeout: Annotated[
        float,
        typer.Option(help="Streams: seconds to keep reconnecting to a broker (Redis) that went away."),
    ] = 300.0,
    runner: Annotated[
        str, typer.Option(help="local, or beam (Beam options after --, e.g. -- --runner=DataflowRunner).")
    ] = "local",
) -> None:
    """Run a pipeline on the local engine (a topic source runs until Ctrl-C/SIGTERM), or on
    Apache Beam with --runner beam."""
    from inferline.engine.local import LocalEngine
    from inferline.pipeline import load_spec
    from inferline.progress import ProgressDisplay, print_summary
    from inferline.report.runs import record_run

    spec = load_spec(pipeline, set_ or [])
    _log_to_stderr()
    if runner not in ("local", "beam"):
        raise InferlineError(f"--runner {runner!r}: expected local or beam")
    if runner == "beam":
        from inferline.engine import quiet_beam_logging

        quiet_beam_logging()
        from inferline.engine.beam import beam_runner_name, run_beam

        runner_name = beam_runner_name(ctx.args)
        with record_run(spec, runner=f"beam/{runner_name}") as history:
            # Beam reports counts only at the end; on a terminal, say what is running meanwhile.
            status = (
                err.status(f"{spec.name}: running on Beam's {runner_name}")
                if progress and err.is_terminal
                else None
            )
            if status is not None:
                status.start()
            try:
                summary = history.summary = run_beam(spec, ctx.args, limit=limit)
            finally:
                if status is not None:
                    status.stop()
        print_summary(out, summary)
        return
    if ctx.args:
        raise InferlineError(
            f"unexpected arguments {' '.join(ctx.args)}; Beam options go after -- with --runner beam"
        )
    signals = _Signals(stream=spec.source.kind == "topic")
    signals.install()
    display = ProgressDisplay(err, enabled=progress and err.is_terminal, label=spec.name)
    engine = LocalEngine(
        spec,
        limit=max_messages if max_messages is not None else limit,
        stop=signals.stop,
        interrupt=signals.now,
        on_progress=display.update,
        until_idle=until_idle,
        stats_every=stats_every,
        broker_timeout=broker_timeout,
        on_stats=lambda stats: err.print(stats.line(), markup=False),
    )
    with display, record_run(spec, engine.stats) as history:
        summary = history.summary = engine.run()
    print_summary(out, summary)
    if summary.status == "interrupted":
        raise typer.Exit(signals.exit_code)


@app.command()
def quickstart(
    example: Annotated[str, typer.Argument(help="Which example: iris or digits.")] = "iris",
    root: Annotated[str, typer.Option(help="Folder for the example's files.")] = "examples",
) -> None:
    """Build an example (trains its model on first use) and run its pipeline."""
    if example == "digits":
        from inferline.examples import digits

        digits.quickstart(root, out)
    elif example == "iris":
        from inferline.examples import iris

        iris.quickstart(root, out)
    else:
        raise InferlineError(f"quickstart: unknown example {example!r}; expected iris or digits")


register_all(app)


def _log_to_stderr() -> None:
    # Model swaps (INFO) and load failures (WARNING) of a running pipeline, one line each.
    from inferline.logs import log_to_stderr

    log_to_stderr()


class _Signals:
    """Ctrl-C/SIGTERM during `run`. The first stops reading: a stream finishes, commits and
    acks what it read and exits 0; a batch run is interrupted (exit 128 + the signal). The
    second ends the run at once; a third raises KeyboardInterrupt. Every way out records
    the run in its history."""

    def __init__(self, *, stream: bool) -> None:
        self.stream = stream
        self.stop = threading.Event()
        self.now = threading.Event()
        self.first: int | None = None
        self.count = 0

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._handle)
            signal.signal(signal.SIGTERM, self._handle)

    @property
    def exit_code(self) -> int:
        return 128 + (self.first or signal.SIGINT)

    def _handle(self, signum: int, frame: Any) -> None:
        self.count += 1
        if self.count == 1:
            self.first = signum
            self.stop.set()
            doing = "finishing what was read" if self.stream else "interrupting the run"
            err.print(f"{signal.Signals(signum).name}: {doing} (Ctrl-C again to stop at once)", markup=False)
        elif self.count == 2:
            self.now.set()
        else:
            raise KeyboardInterrupt


def main() -> None:
    """Entry point: run the app, turning `InferlineError`s into one-line messages."""
    debug = "--debug" in sys.argv[1:]
    if debug:
        sys.argv.remove("--debug")
    try:
        app()
    except InferlineError as exc:
        if debug:
            traceback.print_exc()
        err.print(f"error: {exc}", markup=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
