"""Ctrl-C and SIGTERM during long commands: stop at the next step, keep what was done.

The first SIGINT or SIGTERM only sets a flag; the command's event loop sees it between two
events and closes the core generator, whose ``GeneratorExit`` handling writes a resumable
checkpoint of every completed iteration. A second signal interrupts at once.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

__all__ = ["Interrupted", "StopRequest", "stop_on_signals"]


class Interrupted(Exception):
    """A command stopped on a signal; ``exit_code`` is 128 + the signal number."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class StopRequest:
    """The signal received so far (``None`` while none arrived)."""

    def __init__(self) -> None:
        self.signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return "" if self.signum is None else signal.Signals(self.signum).name

    def interrupted(self, message: str) -> Interrupted:
        return Interrupted(f"{self.name}: {message}", 128 + int(self.signum or signal.SIGINT))


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """Install the deferred SIGINT / SIGTERM handlers for the block (main thread only)."""
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop  # signals are delivered to the main thread only; nothing to install
        return

    def handler(signum, frame) -> None:
        if stop.requested:  # the second signal: stop now
            raise KeyboardInterrupt
        stop.signum = signum

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
