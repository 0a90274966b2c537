"""The one progress vocabulary of the library, and driving its generators.

Long operations (training, inference, evaluation, calibration, benchmarks, synthesis) are
generators that yield progress events and *return* their result. Every event is a
:class:`Progress`: a ``stage`` name and ``done`` of ``total`` units (iterations, slices, scans,
runs). The CLI and scripts run them with :func:`drain`; a generator that runs another one and
speaks about it in its own events uses :func:`relay`; the napari widgets run the very same
generators in a ``thread_worker``.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Protocol, TypeVar, runtime_checkable

__all__ = ["Progress", "drain", "fraction", "relay"]

E = TypeVar("E")
F = TypeVar("F")
R = TypeVar("R")


@runtime_checkable
class Progress(Protocol):
    """What every progress event says: its ``stage`` and ``done`` of ``total`` units.

    ``total`` is 0 when the amount of work is not known yet.
    """

    @property
    def stage(self) -> str:
        """Name of the step the work is in (e.g. ``"warmup"``, ``"predict"``)."""
        ...

    @property
    def done(self) -> int:
        """Units finished so far."""
        ...

    @property
    def total(self) -> int:
        """Units in all (0: unknown)."""
        ...


def fraction(event: Progress) -> float:
    """Return ``done / total`` clipped to [0, 1] (0 while the total is unknown)."""
    return min(1.0, max(0.0, event.done / event.total)) if event.total > 0 else 0.0


def drain(gen: Generator[E, None, R], on_event: Callable[[E], object] | None = None) -> R:
    """Run ``gen`` to the end, passing each event to ``on_event``; return the generator's value."""
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            return stop.value
        if on_event is not None:
            on_event(event)


def relay(gen: Generator[E, None, R], convert: Callable[[E], F | None]) -> Generator[F, None, R]:
    """Yield ``convert(event)`` for each event of ``gen`` (``None``: drop it); return its value.

    Use it as ``result = yield from relay(inner, to_my_event)``. Closing the outer generator
    closes ``gen`` too, so a cancelled job stops its inner work at once.
    """
    try:
        while True:
            try:
                event = next(gen)
            except StopIteration as stop:
                return stop.value
            out = convert(event)
            if out is not None:
                yield out
    finally:
        gen.close()
