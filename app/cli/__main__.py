"""``python -m app.cli``: the ``usher`` command (worker processes are started this way)."""

from app.cli import entry

entry()
