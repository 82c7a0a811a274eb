"""``python -m tests.chaos --executions N --kill-every S``: the chaos run by hand.

Uses USHER_DATABASE_URL's server (a scratch database is made beside it) and USHER_BROKER_URL
(or the embedded filesystem broker). Prints the report; exits 1 if an invariant broke.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import uuid
from dataclasses import asdict
from pathlib import Path

from app import celery as usher_celery
from app import config, db
from app.cli.bench.core import drop_database, scratch_database
from tests.chaos import harness


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos")
    parser.add_argument("--executions", type=int, default=500)
    parser.add_argument("--kill-every", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    base = config.load()
    url = base.database_url or db.embedded_url(base.home)
    scratch_url, name = scratch_database(url)
    workdir = Path(tempfile.mkdtemp(prefix=f"usher-chaos-{uuid.uuid4().hex[:6]}-"))
    settings = base.model_copy(
        update={
            "database_url": scratch_url,
            "home": workdir / "home",
            "lease_s": 5,
            "sweep_interval_s": 1.0,
        }
    )
    db.upgrade(scratch_url)
    engine = db.make_engine(scratch_url)
    app = usher_celery.create(settings)
    app.set_current()
    try:
        report = harness.run(
            engine,
            settings,
            app,
            workdir,
            args.executions,
            args.kill_every,
            args.workers,
            args.seed,
            timeout_s=max(600, args.executions / 5),
        )
    finally:
        engine.dispose()
        app.close()
        drop_database(url, name)
    print(json.dumps(asdict(report) | {"ok": report.ok}, indent=2))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
