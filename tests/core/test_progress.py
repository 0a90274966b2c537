"""One progress vocabulary: every event type is a Progress; drain and relay drive generators."""

from __future__ import annotations

import numpy as np
import pytest

from cavlog_core import Progress, drain, relay
from cavlog_core._progress import fraction
from cavlog_core.training.events import TrainEvent


def _count(n: int):
    yield from range(1, n + 1)
    return "finished"


def test_relay_converts_drops_and_returns():
    def outer():
        result = yield from relay(_count(5), lambda i: None if i % 2 else f"even {i}")
        yield result

    assert list(outer()) == ["even 2", "even 4", "finished"]


def test_closing_the_outer_generator_closes_the_inner_one():
    closed = []

    def inner():
        try:
            yield 1
            yield 2
        finally:
            closed.append(True)

    outer = relay(inner(), lambda i: i)
    assert next(outer) == 1
    outer.close()
    assert closed == [True]


def test_drain_passes_every_event_and_returns():
    seen: list[int] = []
    assert drain(_count(3), seen.append) == "finished"
    assert seen == [1, 2, 3]


def test_every_event_type_speaks_progress():
    from cavlog_core.benchmark.runner import BenchmarkEvent
    from cavlog_core.evaluate import EvaluateEvent
    from cavlog_core.inference.predict import PredictEvent

    events = [
        TrainEvent(7, 20, 0, "warmup"),
        TrainEvent(0, 0, 0, "prepare", {"train_cases_done": 2, "train_cases_total": 5}),
        PredictEvent(3, 10, 42, np.zeros((2, 2), np.float32)),
        EvaluateEvent(1, 4, "case"),
        EvaluateEvent(2, 4, "case", skipped=True),
        BenchmarkEvent("train", step=5, total_steps=50),
    ]
    assert all(isinstance(e, Progress) for e in events)
    assert [(e.stage, e.done, e.total) for e in events] == [
        ("warmup", 7, 20), ("prepare", 2, 5), ("predict", 3, 10), ("evaluate", 1, 4),
        ("skip", 2, 4), ("train", 5, 50)]
    assert [fraction(e) for e in events] == pytest.approx([0.35, 0.4, 0.3, 0.25, 0.5, 0.1])
    assert fraction(BenchmarkEvent("prepare")) == 0.0  # total not known yet
