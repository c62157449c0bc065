"""Errors a user acts on, as opposed to bugs: each message is one line that says what to do.

Every one is a :class:`UserError`. The command-line tools (:func:`cli`) print
it as ``error: <message>`` on one line, without a traceback, and exit with its
``exit_status``: 2 when something was refused before it ran (a config key, a
plugin that does not import, a busy run directory, a Slurm submission), 1 for
a :class:`RunError`, which stopped a run that had started.
"""

from __future__ import annotations

import functools
import sys
from typing import Callable


class UserError(Exception):
    """Refused before anything ran; the user fixes the input and runs the same command again."""

    exit_status = 2


class RunError(UserError, RuntimeError):
    """A run cannot go on: a file it cannot write, a non-finite loss, a dead loader worker.

    A user error too (one line that says what to do), with its own exit status:
    the run had started and may have written checkpoints that a relaunch resumes.
    """

    exit_status = 1


def cli(main: Callable[..., int]) -> Callable[..., int]:
    """Wrap a command-line ``main``: a :class:`UserError` becomes one ``error:`` line and its exit status."""

    @functools.wraps(main)
    def run(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return exc.exit_status

    return run
