"""Worker processes for integration tests: see ``app.cli.processes``."""

from __future__ import annotations

from app.cli.processes import REPO, Pool, Worker, environment

__all__ = ["REPO", "Pool", "Worker", "environment"]
