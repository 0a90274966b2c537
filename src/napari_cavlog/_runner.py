"""Driving a ``cavlog_core`` progress generator from a worker thread, cancellably (no Qt).

napari's generator workers stop on ``worker.quit()`` by simply not resuming the generator, which
leaves it open until garbage collection (possibly on the GUI thread). Here the widget instead sets
a :class:`threading.Event`; :func:`drive` notices it between two events and *closes* the core
generator in the worker thread, so the core's ``finally``/``GeneratorExit`` handling (e.g. the
trainer's final checkpoint) runs there, and then returns normally with ``cancelled=True``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["Outcome", "drive", "one_line"]

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
        The one-line message of a failure raised by the run: a ``CavlogError`` (bad input), or
        any other exception (a full disk, a model too large for memory, a bug), reported as
        ``"<Type>: <message>"`` with its traceback sent to the ``napari_cavlog`` logger.
        Every failure ends the job, so a widget never waits for a worker that cannot finish
        (napari's workers skip ``finished`` after a ``RuntimeError``).
    unexpected : bool
        True when ``error`` comes from an exception other than ``CavlogError``.
    """

    result: R | None
    cancelled: bool = False
    error: str | None = None
    unexpected: bool = False


def one_line(err: BaseException) -> str:
    """``"<Type>: <first line of the message>"`` (at most 300 characters)."""
    text = str(err).strip().splitlines()
    first = text[0] if text else ""
    line = f"{type(err).__name__}: {first}" if first else type(err).__name__
    return line if len(line) <= 300 else line[:297] + "..."


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
        The core generator's return value, the cancellation marker, or the message of any
        exception raised while starting or running it (see :class:`Outcome`).
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
    except Exception as err:
        logging.getLogger("napari_cavlog").error("job failed: %s", one_line(err), exc_info=True)
        return Outcome(None, error=one_line(err), unexpected=True)
    finally:
        if gen is not None:
            gen.close()

