"""The error a command line can be wrong with, apart from the run failing."""

from __future__ import annotations

__all__ = ["ConfigurationError"]


class ConfigurationError(Exception):
    """The options cannot make a run; nothing has started. The message names the option and the fix
    (the command prints it as one line and exits with status 2)."""
