"""Worker processes for integration tests: see ``app.processes``."""

from __future__ import annotations

from app.processes import Pool, Worker, environment

__all__ = ["Pool", "Worker", "environment"]
