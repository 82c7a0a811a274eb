"""Worker processes for integration tests: see ``app.cli.processes``."""

from __future__ import annotations

from app.cli.processes import REPO, Pool, Worker, environment

__all__ = ["REPO", "Pool", "Worker", "environment", "tear_down"]


def tear_down(pool: Pool) -> None:
    """A fixture's end: every process of the pool killed at once. The test has asserted what
    it wanted by then, and a graceful stop costs about 4 s a worker (Celery's warm shutdown
    and its pool's join), which over the suite's tests with workers was minutes of CI. The
    test's database is dropped and its broker namespace cleaned right after."""
    pool.stop_all(grace_s=0)
