"""Errors a user acts on, as opposed to bugs: each message is one line that says what to do.

Config problems are :class:`jepa_core.config.ConfigError` (the CLIs exit 2 before
anything runs); a :class:`RunError` stops a run that had started (exit 1).
"""

from __future__ import annotations


class RunError(RuntimeError):
    """A run cannot go on: a file it cannot write, a non-finite loss, a dead loader worker."""
