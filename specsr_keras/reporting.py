"""How library code talks to people: a reporter passed in by the caller.

The library never prints. Long loops take a `Reporter` and call `task(...)` for a
progress bar and `info(...)` for one-line messages; the CLI passes `RichReporter` on a
terminal and `LogReporter` (plain `logging` lines, for batch logs) otherwise, tests and
scripts the silent default `Reporter`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator


class Reporter:
    """Silent reporter: the base class, and what library functions use by default."""

    def info(self, message: str) -> None:
        """A one-line status message."""

    @contextlib.contextmanager
    def task(self, description: str, total: float | None) -> Iterator[Callable[..., None]]:
        """Progress of one long task; yields `advance(n=1, **fields)`."""
        yield lambda n=1, **fields: None


class RichReporter(Reporter):
    """Rich progress bars (with rate and ETA) and messages on the terminal."""

    def __init__(self, console=None, unit: str = "it"):
        from rich.console import Console

        self.console = console or Console(stderr=True)
        self.unit = unit

    def info(self, message: str) -> None:
        self.console.print(message)

    @contextlib.contextmanager
    def task(self, description: str, total: float | None):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
        )
        with Progress(*columns, console=self.console, transient=False) as progress:
            task_id = progress.add_task(description, total=total, rate="", status="")

            def advance(n: float = 1, **fields) -> None:
                progress.advance(task_id, n)
                speed = progress.tasks[0].speed
                rate = f"{speed:,.1f} {self.unit}/s" if speed else ""
                status = "  ".join(f"{k}={_fmt(v)}" for k, v in fields.items())
                progress.update(task_id, rate=rate, status=status)

            yield advance


class LogReporter(Reporter):
    """Plain lines through the `specsr` logger: messages, and progress at most every
    `every_s` seconds (done/total, percent, rate, ETA) plus a final line per task."""

    def __init__(self, unit: str = "it", every_s: float = 30.0, logger: logging.Logger | None = None):
        self.unit, self.every_s = unit, every_s
        self.logger = logger or logging.getLogger("specsr")

    def info(self, message: str) -> None:
        from rich.text import Text

        self.logger.info(Text.from_markup(message).plain)

    @contextlib.contextmanager
    def task(self, description: str, total: float | None):
        started = last = time.monotonic()
        done = 0.0

        def line(fields: dict) -> str:
            elapsed = time.monotonic() - started
            rate = done / elapsed if elapsed > 0 else 0.0
            parts = [f"{description}: {done:,.0f}" + (f"/{total:,.0f} ({100 * done / total:.0f}%)" if total else "")]
            parts.append(f"{rate:,.1f} {self.unit}/s")
            if total and rate > 0 and done < total:
                parts.append(f"ETA {(total - done) / rate:,.0f} s")
            parts += [f"{k}={_fmt(v)}" for k, v in fields.items()]
            return ", ".join(parts)

        def advance(n: float = 1, **fields) -> None:
            nonlocal done, last
            done += n
            if time.monotonic() - last >= self.every_s:
                last = time.monotonic()
                self.logger.info(line(fields))

        yield advance
        self.logger.info(line({}) + f", done in {time.monotonic() - started:,.1f} s")


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
