"""Worker processes for integration tests: see ``app.processes``."""

from __future__ import annotations

from app.processes import REPO, Pool, Worker, environment

__all__ = ["REPO", "Pool", "Worker", "environment"]
