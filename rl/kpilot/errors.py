"""Typed input errors, raised at the edge and rendered once by the CLI as a single line."""

from __future__ import annotations


class KpilotError(Exception):
    """An error in what the user gave us. `str()` is the one line the CLI prints."""

    exit_code = 2

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 column: str | int | None = None, option: str | None = None):
        self.message = message
        self.option = option
        self.path = path
        self.line = line
        self.column = column
        super().__init__(self.render())

    def render(self) -> str:
        where = []
        if self.option is not None:
            where.append(f"option {self.option}")
        if self.path is not None:
            where.append(str(self.path))
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.column is not None:
            where.append(f"column {self.column!s}")
        return (": ".join([", ".join(where), self.message]) if where else self.message)


class TraceError(KpilotError):
    """A trace file that cannot be read: unknown format, malformed row, empty file."""


class ConfigError(KpilotError):
    """A bad option, config file or model specification."""


class PolicyError(KpilotError):
    """A policy artifact that is missing, corrupt, tampered with or of the wrong version."""
