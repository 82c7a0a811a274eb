"""When a schedule fires: a 5-field ``cron`` in an IANA timezone (cronsim), ``every_s``, or a
one-off ``at``; and which ticks a beat that looks at ``now`` fires.

Every beat computes the same instants (``every_s`` ticks are whole multiples of the period
since the Unix epoch, cron ticks are the schedule's own), so the unique key on (schedule,
fire time) makes any number of beats fire each tick once. Across a DST change a cron tick
in the hour that is skipped fires at the first valid instant after it, and one in the hour
that repeats fires once, at its first occurrence (cronsim's rules, the ones cron users
expect).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import islice
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

# A beat that was away longer than this many ticks of a cron schedule fires at most these
# (the latest ones); `missed` decides what happens to the late ones anyway.
MAX_TICKS = 1000


class BadTiming(ValueError):
    """A schedule whose timing cannot be computed (a bad cron field, an unknown timezone);
    ``key`` names the setting at fault (None: how they are combined)."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


def at_time(text: str) -> datetime:
    """A one-off's ``at``: ISO 8601, with or without an offset (without: the schedule's
    timezone)."""
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise BadTiming(
            f"{text!r} is not an ISO 8601 time (e.g. 2026-07-01T09:00:00)", "at"
        ) from None


@dataclass(frozen=True)
class Timing:
    cron: str | None = None
    every_s: float | None = None
    at: datetime | None = None
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        if sum(x is not None for x in (self.cron, self.every_s, self.at)) != 1:
            raise BadTiming("give exactly one of cron, every_s, at")
        try:
            zone = ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise BadTiming(
                f"{self.timezone!r} is not an IANA timezone name (e.g. Europe/Berlin)", "timezone"
            ) from None
        if self.cron is not None:
            if len(self.cron.split()) != 5:
                raise BadTiming(
                    f"cron takes 5 fields (minute hour day month weekday): {self.cron!r}", "cron"
                )
            try:
                CronSim(self.cron, datetime.now(zone))
            except CronSimError as error:
                raise BadTiming(f"cron {self.cron!r}: {error}", "cron") from None
        if self.every_s is not None and not self.every_s >= 1:
            raise BadTiming("every_s is at least 1", "every_s")
        if self.at is not None and self.at.tzinfo is None:
            object.__setattr__(self, "at", self.at.replace(tzinfo=zone))

    def describe(self) -> str:
        if self.cron is not None:
            return f"cron {self.cron}"
        if self.every_s is not None:
            return f"every {self.every_s:g}s"
        assert self.at is not None
        return f"at {self.at.isoformat()}"

    def next_after(self, moment: datetime) -> datetime | None:
        """The first tick strictly after ``moment`` (UTC); None when there is none (a past
        ``at``)."""
        if self.every_s is not None:
            period = self.every_s
            n = math.floor(moment.timestamp() / period) + 1
            return datetime.fromtimestamp(n * period, UTC)
        if self.at is not None:
            return self.at.astimezone(UTC) if self.at > moment else None
        assert self.cron is not None
        local = moment.astimezone(ZoneInfo(self.timezone))
        return next(iter(CronSim(self.cron, local))).astimezone(UTC)

    def ticks(self, since: datetime, until: datetime) -> list[datetime]:
        """Ticks in ``[since, until]``, at most the latest MAX_TICKS of them."""
        if self.every_s is not None:
            first = math.ceil(since.timestamp() / self.every_s)
            last = math.floor(until.timestamp() / self.every_s)
            start = max(first, last - MAX_TICKS + 1)
            return [datetime.fromtimestamp(n * self.every_s, UTC) for n in range(start, last + 1)]
        found: list[datetime] = []
        tick = self.next_after(since - timedelta(microseconds=1))
        while tick is not None and tick <= until:
            found.append(tick)
            if len(found) > MAX_TICKS:
                found.pop(0)
            tick = self.next_after(tick)
        return found

    def upcoming(self, after: datetime, count: int) -> list[datetime]:
        """The next ``count`` ticks after ``after`` (for listings)."""

        return list(islice(self._walk(after), count))

    def _walk(self, after: datetime) -> Iterator[datetime]:
        tick = self.next_after(after)
        while tick is not None:
            yield tick
            tick = self.next_after(tick)


@dataclass(frozen=True)
class Due:
    fire: list[datetime]  # the ticks to fire now, oldest first
    skipped: int  # late ticks left unfired (missed: skip, or all but the latest for run_once)
    next_fire_at: datetime | None


def due(timing: Timing, next_fire_at: datetime, now: datetime, missed: str, grace_s: float) -> Due:
    """What a beat fires at ``now`` for a schedule due at ``next_fire_at``: every tick up to
    ``now`` that is at most ``grace_s`` late; of the later ones, none (``skip``) or the
    latest (``run_once``)."""
    ticks = timing.ticks(next_fire_at, now)
    late = [t for t in ticks if (now - t).total_seconds() > grace_s]
    on_time = ticks[len(late) :]
    kept = late[-1:] if missed == "run_once" else []
    return Due(kept + on_time, len(late) - len(kept), timing.next_after(now))
