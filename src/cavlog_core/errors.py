"""Exceptions for expected failures on user input.

The CLI and the napari widgets catch :class:`CavlogError` and show its message as a single line;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class CavlogError(ValueError):
    """An expected failure caused by user input (a bad file, option or dataset).

    The message is one line that names the offending file or value and the problem.
    """


class InputFileError(CavlogError):
    """A file that cannot be used: missing, corrupt, wrong format, wrong shape or content."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


def one_line_warnings(prefix: str = "cavlog") -> None:
    """Print warnings as ``<prefix>: warning: <message>``: no source file, line or code.

    Installed by the ``cavlog`` CLI and the scripts; a library user keeps Python's default.
    """
    import sys
    import warnings

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"{prefix}: warning: {message}", file=sys.stderr if file is None else file)

    warnings.showwarning = show
