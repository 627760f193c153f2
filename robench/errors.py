"""Errors the CLI turns into clear messages and exit codes (2 = invalid input)."""

from __future__ import annotations


class RobenchError(Exception):
    """Base class; the message is shown to the user as is."""

    exit_code = 1


class UserInputError(RobenchError):
    """Invalid input from the user (a suite, a parameter, a path): exit code 2."""

    exit_code = 2


class SuiteError(UserInputError):
    """A suite file that does not validate; ``problems`` holds (location, message) pairs."""

    def __init__(self, path: str, problems: list[tuple[str, str]]):
        self.path = path
        self.problems = problems
        lines = [f"{path}: {len(problems)} problem(s)"]
        lines += [f"  {loc}: {msg}" if loc else f"  {msg}" for loc, msg in problems]
        super().__init__("\n".join(lines))


class PluginError(UserInputError):
    """Unknown or clashing plugin names, or a plugin module that cannot be loaded."""


class DataMissingError(UserInputError):
    """A dataset file is not where it should be."""


class StoreError(RobenchError):
    """A results store that cannot be opened or is not a robench store."""
