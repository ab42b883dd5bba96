"""`inferline publish TOPIC`: put JSON lines from a file or stdin on a topic."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from typing import Annotated

import typer

from inferline.errors import InputError


def _lines(path: str | None) -> Iterator[bytes]:
    if path is None or path == "-":
        stream = sys.stdin.buffer
        for line in stream:
            if line.strip():
                yield line.rstrip(b"\r\n")
        return
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        raise InputError(f"publish --from {path}: file not found") from None
    with handle:
        for line in handle:
            if line.strip():
                yield line.rstrip(b"\r\n")


def register(app: typer.Typer) -> None:
    @app.command()
    def publish(
        topic: Annotated[str, typer.Argument(help="Topic name.")],
        url: Annotated[
            str | None,
            typer.Option(
                help="redis://host:port/db or an embedded queue file [env INFERLINE_QUEUE_URL, queue.db]"
            ),
        ] = None,
        from_: Annotated[
            str | None, typer.Option("--from", help="JSON-lines file, one message a line (default: stdin).")
        ] = None,
        rate: Annotated[
            float | None, typer.Option(help="Messages per second (default: as fast as possible).")
        ] = None,
        broker_timeout: Annotated[
            float,
            typer.Option(help="Seconds to keep reconnecting to a broker (Redis) that went away."),
        ] = 300.0,
    ) -> None:
        """Publish messages (one JSON object a line) to a topic."""
        from inferline.io.topics.publish import default_url
        from inferline.io.topics.publish import publish as publish_messages
        from inferline.logs import log_to_stderr

        if rate is not None and rate <= 0:
            raise InputError(f"publish --rate {rate:g}: expected a positive number of messages per second")
        target = url or default_url()
        started = time.monotonic()
        log_to_stderr()
        count = publish_messages(topic, _lines(from_), url=target, rate=rate, broker_timeout=broker_timeout)
        seconds = max(time.monotonic() - started, 1e-9)
        typer.echo(
            f"published {count:,} messages to topic {topic} at {target} ({count / seconds:,.0f} msg/s)"
        )
