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


class DataFileError(UserInputError):
    """A dataset file that is there but damaged, truncated, or holds something other than arrays.

    The message names the file and says what to do, on one line: see :func:`damaged_file`."""


def damaged_file(path, exc_or_problem) -> DataFileError:
    """``<path>: <what is wrong>; replace ...`` from an exception of a file reader or a text."""
    if isinstance(exc_or_problem, BaseException):
        text = str(exc_or_problem).strip().splitlines()
        what = f"damaged or not the expected format ({type(exc_or_problem).__name__}: {text[0] if text else 'no detail'})"
    else:
        what = str(exc_or_problem)
    return DataFileError(f"{path}: {what}; replace it with a good copy (robench data import PATH/TO/FILE)")


class StoreError(RobenchError):
    """A results store that cannot be opened or is not a robench store."""
