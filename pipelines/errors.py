"""The one exception a pipeline stage raises for input it cannot use at all."""

from __future__ import annotations

from pathlib import Path


class PipelineError(Exception):
    """A file or request that a pipeline stage cannot process at all.

    ``str()`` is one line, ``"path:line: message"`` (parts that are unknown are left out), so a
    CLI can print it as is and exit with code 2.

    Parameters
    ----------
    message
        What is wrong, without the location.
    path
        The file concerned (for zip members ``archive.zip:member.csv``), if any.
    line
        The 1-based line in that file, if known.
    """

    def __init__(self, message: str, *, path: str | Path | None = None, line: int | None = None):
        self.message = " ".join(str(message).split())  # always one line
        self.path = None if path is None else str(path)
        self.line = line
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = [part for part in (self.path, self.line) if part is not None]
        prefix = ":".join(str(part) for part in where)
        return f"{prefix}: {self.message}" if prefix else self.message
