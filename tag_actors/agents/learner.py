"""Learning in a second thread while a copy of the network keeps acting (``run.learner = "background"``).

The acting thread calls ``acting_net()`` for every forward pass; ``start`` hands a batch to a thread that trains
``net`` in place; when the thread ends, the next ``acting_net()`` (or ``collect``) copies the new weights into
the acting copy and keeps the update's stats for ``pop_finished``. One update at a time: while ``busy``, the
agent's batch keeps growing. Not reproducible (when new weights arrive depends on timing), which is why lockstep
runs learn inline and never build one of these.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from typing import Any

from torch import nn

__all__ = ["BackgroundLearner"]


class BackgroundLearner:
    """Trains ``net`` in a thread; ``acting_net()`` is a copy that takes the new weights when an update ends."""

    def __init__(self, net: nn.Module, name: str):
        self.net = net
        self.name = name
        self._policy: nn.Module | None = None
        self._thread: threading.Thread | None = None
        self._result: dict[str, float] | BaseException | None = None
        self._finished: list[dict[str, float]] = []

    def acting_net(self) -> nn.Module:
        """The copy that acts, refreshed with ``net``'s weights when an update has ended."""
        self.collect(wait=False)
        if self._policy is None:
            self._policy = copy.deepcopy(self.net)
        return self._policy

    @property
    def busy(self) -> bool:
        """Whether an update is still running (after harvesting one that has ended)."""
        self.collect(wait=False)
        return self._thread is not None

    def start(self, train: Callable[[Any], dict[str, float]], batch: Any) -> None:
        """Run ``train(batch)`` (which updates ``net``) in a new thread."""

        def run() -> None:
            try:
                self._result = train(batch)  # read by collect() after join()
            except Exception as e:  # noqa: BLE001 — raised again in the acting thread, which owns the process
                self._result = e

        self._thread = threading.Thread(target=run, name=f"{self.name}-learner", daemon=True)
        self._thread.start()

    def collect(self, wait: bool) -> None:
        """Harvest a finished update: its stats, and its weights into the acting copy (``wait``: join first)."""
        if self._thread is None or (self._thread.is_alive() and not wait):
            return
        self._thread.join()
        self._thread = None
        result, self._result = self._result, None
        if isinstance(result, BaseException):
            raise RuntimeError(f"agent {self.name!r}: the background update failed: {result}") from result
        if result is not None:
            self._finished.append(result)
        if self._policy is not None:
            self._policy.load_state_dict(self.net.state_dict())

    def pop_finished(self) -> list[dict[str, float]]:
        """Stats of the updates that ended since the last call."""
        self.collect(wait=False)
        out, self._finished = self._finished, []
        return out

    def forget_policy(self) -> None:
        """Drop the acting copy (after ``net`` was loaded from a checkpoint): the next act copies ``net`` again."""
        self.collect(wait=True)
        self._policy = None
