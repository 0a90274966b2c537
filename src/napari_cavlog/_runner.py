"""Driving a ``cavlog_core`` progress generator from a worker thread, cancellably (no Qt).

napari's generator workers stop on ``worker.quit()`` by simply not resuming the generator, which
leaves it open until garbage collection (possibly on the GUI thread). Here the widget instead sets
a :class:`threading.Event`; :func:`drive` notices it between two events and *closes* the core
generator in the worker thread, so the core's ``finally``/``GeneratorExit`` handling (e.g. the
trainer's final checkpoint) runs there, and then returns normally with ``cancelled=True``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

__all__ = ["Outcome", "drive"]

E = TypeVar("E")
R = TypeVar("R")


@dataclass(frozen=True)
class Outcome(Generic[R]):
    """What a driven generator ended with.

    Attributes
    ----------
    result : object or None
        The generator's return value (``None`` when cancelled).
    cancelled : bool
        True when the run was stopped through the cancel event.
    error : str or None
        The one-line message of an expected failure (``CavlogError``) raised by the run;
        unexpected exceptions are not caught (napari reports them with their traceback).
    """

    result: R | None
    cancelled: bool = False
    error: str | None = None


def drive(
    start: Callable[[], Generator[E, None, R]],
    cancel: threading.Event,
) -> Generator[E, None, Outcome[R]]:
    """Re-yield the events of ``start()`` until it returns or ``cancel`` is set.

    Parameters
    ----------
    start : callable
        Creates the core generator; called inside the worker thread so that slow set-up (loading
        a checkpoint, reading scans) does not block the GUI.
    cancel : threading.Event
        Checked before each step; when set, the core generator is closed and
        ``Outcome(None, cancelled=True)`` is returned.

    Returns
    -------
    Outcome
        The core generator's return value, the cancellation marker, or the message of a
        ``CavlogError`` raised while starting or running it.
    """
    from cavlog_core.errors import CavlogError

    if cancel.is_set():
        return Outcome(None, cancelled=True)
    gen = None
    try:
        gen = start()
        while True:
            if cancel.is_set():
                gen.close()
                return Outcome(None, cancelled=True)
            try:
                event = next(gen)
            except StopIteration as stop:
                return Outcome(stop.value)
            yield event
    except CavlogError as err:
        return Outcome(None, error=str(err))
    finally:
        if gen is not None:
            gen.close()


def drain(gen: Generator[Any, None, R]) -> R:
    """Run a generator to the end and return its return value (headless helper)."""
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value
