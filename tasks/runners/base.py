"""What every runner shares."""

from __future__ import annotations


class RunnerError(Exception):
    """A runner failed; ``permanent`` says whether a retry could help."""

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent
