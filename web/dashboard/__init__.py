"""The operator's dashboard: server-rendered pages, a session from an API token, CSRF forms.

Reads go through ``app.queries``, ``policies`` and ``web.views_data`` (one page at a time);
writes take the same path as the REST API: a unit of work, then publish after commit.
``/ui/*.json`` feed the 2-second live refresh of ``static/dashboard.js``.

One blueprint, ``bp`` (endpoints ``dashboard.*``), made in ``base`` with what every page
shares; its views by concept: ``login``, ``lines`` (the overview), ``actions`` (an action's
page) and its ``controls``, ``executions`` (an execution, the dead-letter queue),
``search`` (the executions list and its filters), ``events``, ``schedules``, ``pools``,
``catalog`` (the packs and rules) and ``audit`` (every mutation).
"""

from __future__ import annotations

# Importing the views' modules adds their routes to the blueprint.
from web.dashboard import (
    actions,
    audit,
    catalog,
    controls,
    events,
    executions,
    lines,
    login,
    output,
    pools,
    schedules,
    search,
)
from web.dashboard.base import SESSION_LIFETIME, bp, secret_key

__all__ = [
    "SESSION_LIFETIME",
    "actions",
    "audit",
    "bp",
    "catalog",
    "controls",
    "events",
    "executions",
    "lines",
    "login",
    "output",
    "pools",
    "schedules",
    "search",
    "secret_key",
]
