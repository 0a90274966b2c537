"""Driving the library's progress generators headlessly.

Long operations (training, inference, evaluation, synthesis) are generators that yield progress
events and *return* their result; the CLI and scripts drain them with :func:`drain`, the napari
widgets run the very same generators in a ``thread_worker``.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import TypeVar

E = TypeVar("E")
R = TypeVar("R")


def drain(gen: Generator[E, None, R], on_event: Callable[[E], object] | None = None) -> R:
    """Run ``gen`` to the end, passing each event to ``on_event``; return the generator's value."""
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            return stop.value
        if on_event is not None:
            on_event(event)
