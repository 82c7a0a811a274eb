"""Group commit for single requests: the requests of one kind that arrive while a
transaction of theirs is in flight go together in the next one.

Leader and followers, in the request threads themselves: the first request finds no group
at work and leads, taking every request waiting (itself first, at most ``limit``) into one
batch (``run``: one transaction through the batch path, then what to send after its commit);
a request that arrives meanwhile waits. When the leader's batch has its answers, it wakes
the requests of its batch (each answers with its own outcome) and hands the lead to the
first request still waiting, which runs the next batch with every one waiting by then.
There is no timer: a request alone is a batch of one, at once; under load the batches grow
with the load, so a commit (and its flush) is paid once per batch rather than per request.

Order: a batch's items are placed in the order their requests arrived, and batches commit
one after the other, so the ``seq`` of a line follows the order of the commits, as for
requests one by one. An answer is given only once its batch committed; a batch that fails
as a whole (the database is down) fails each of its requests with that error.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Item = TypeVar("Item")
Outcome = TypeVar("Outcome")


@dataclass
class _Waiting(Generic[Item, Outcome]):
    item: Item
    woken: threading.Event = field(default_factory=threading.Event)
    done: bool = False
    outcome: Outcome | None = None
    error: BaseException | None = None


class Group(Generic[Item, Outcome]):
    """One kind of request's group commit; ``run`` takes a batch of items and gives their
    outcomes in order, committed."""

    def __init__(self, run: Callable[[list[Item]], list[Outcome]], limit: int = 1000) -> None:
        self._run = run
        self._limit = limit
        self._lock = threading.Lock()
        self._waiting: list[_Waiting[Item, Outcome]] = []
        self._leading = False
        self.batches = 0  # how many batches ran (for tests and figures)
        self.items = 0

    def submit(self, item: Item) -> Outcome:
        """``item``'s outcome once its batch committed (or the error that batch raised)."""
        me: _Waiting[Item, Outcome] = _Waiting(item)
        with self._lock:
            self._waiting.append(me)
            lead = not self._leading
            self._leading = True
        if not lead:
            me.woken.wait()
        if not me.done:  # the lead is ours: by arriving first, or handed over
            self._lead()
        if me.error is not None:
            raise me.error
        return me.outcome  # type: ignore[return-value]

    def _lead(self) -> None:
        with self._lock:
            batch, self._waiting = self._waiting[: self._limit], self._waiting[self._limit :]
        try:
            outcomes = self._run([waiting.item for waiting in batch])
            assert len(outcomes) == len(batch)
            for waiting, outcome in zip(batch, outcomes, strict=True):
                waiting.outcome = outcome
        except BaseException as error:
            for waiting in batch:
                waiting.error = error
        self.batches += 1
        self.items += len(batch)
        for waiting in batch:
            waiting.done = True
        with self._lock:
            following = self._waiting[0] if self._waiting else None
            self._leading = following is not None
        if following is not None:
            following.woken.set()  # it leads the next batch
        for waiting in batch:
            waiting.woken.set()
