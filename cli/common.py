"""Shared CLI plumbing: one-line errors (tracebacks behind --debug) and the reporter."""

from __future__ import annotations

import functools
import logging
import os
import sys

import typer
from rich.console import Console
from rich.markup import escape

console = Console(stderr=True)
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, KeyError, OSError)


def one_line_errors(command):
    """Turn user-facing exceptions into one red line and exit code 1 (traceback if SPECSR_DEBUG)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except USER_ERRORS as error:
            if os.environ.get("SPECSR_DEBUG"):
                raise
            message = str(error).splitlines()[0] if str(error) else type(error).__name__
            console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


def reporter(unit: str = "it"):
    """Rich progress bars on a terminal; plain timestamped log lines otherwise (batch jobs)."""
    from specsr_keras.reporting import LogReporter, RichReporter

    if console.is_terminal:
        return RichReporter(console, unit=unit)
    logger = logging.getLogger("specsr")
    if not logger.handlers:
        handler = _CurrentStderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s specsr %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return LogReporter(unit=unit, logger=logger)


class _CurrentStderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time of each record (redirections included)."""

    def emit(self, record):
        self.stream = sys.stderr
        super().emit(record)
