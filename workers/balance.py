"""Which restore actor takes a render task's next request: the one with the fewest crops outstanding,
counted over every render task at once.

Each render task used to send round-robin from its own chunk's actor. Tasks advance at their own pace,
so their turns collide: in the 16-actor scaling simulation some actors had 3-6 requests queued while
others sat idle. One counter that every task asks sees all the requests in flight; a slow actor (a
busier or smaller GPU) keeps its crops outstanding longer and so gets fewer of them.
"""

from __future__ import annotations


class LeastLoaded:
    """Crops outstanding per restore actor, as a Ray actor (its calls run one at a time, so two tasks
    never take the same free slot). A render task calls `acquire` before sending a request; the restore
    actor calls `release` once the pass that answers it is done, so a render task that dies with
    requests outstanding leaves no load behind."""

    def __init__(self, actors: int):
        self.load = [0] * actors

    def acquire(self, crops: int, first: int) -> int:
        """The index of the least-loaded actor, counting `crops` on it. Ties go to the first at or after
        `first` in turn: a task passes its own chunk's index, advanced per request, so tasks that start
        together on an idle pool spread over it as round-robin did."""
        count = len(self.load)
        chosen = min(range(first, first + count), key=lambda k: self.load[k % count]) % count
        self.load[chosen] += crops
        return chosen

    def release(self, actor: int, crops: int) -> None:
        # never below zero: a restarted counter starts from nothing while requests taken before still finish
        self.load[actor] = max(0, self.load[actor] - crops)

    def loads(self) -> list[int]:
        return list(self.load)
