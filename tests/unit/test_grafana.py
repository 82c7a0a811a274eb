"""docs/grafana/usher.json: ranges follow Grafana's scrape interval, and replicas are not added
up (every web process serves the same Postgres-derived series: two replicas scraped would
double a ``sum``)."""

from __future__ import annotations

import json
import re
from pathlib import Path

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana" / "usher.json"
RANGE = re.compile(r"\[([^\]]+)\]")
FUNCTIONS_WITH_RANGE = re.compile(r"\b(rate|irate|increase|delta|deriv)\(")


def exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    found = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert found, "no panel targets"
    return found


def test_every_range_is_the_rate_interval() -> None:
    for expr in exprs():
        assert RANGE.findall(expr) in ([], ["$__rate_interval"]), expr
        if FUNCTIONS_WITH_RANGE.search(expr):
            assert "[$__rate_interval]" in expr, expr


def test_replicas_are_aggregated_with_max_never_sum() -> None:
    for expr in exprs():
        assert not re.search(r"\b(sum|count)\b", expr), expr
        # every series of usher is under a max (by labels, or without the instance)
        inner = re.sub(r"^histogram_quantile\([0-9.]+,\s*", "", expr)
        assert re.match(r"max(\s+(by|without)\s*\([a-z_, ]*\))?\s*\(", inner), expr
