"""Small helpers shared by the CLI, the widgets and the tests."""
from __future__ import annotations

from typing import Callable, Generator, TypeVar

import numpy as np

R = TypeVar("R")

#: Scores are clipped to [LOGIT_EPS, 1 - LOGIT_EPS] before the logit (float32 scores reach
#: 1.0 exactly; this keeps the logit within about ±13.8).
LOGIT_EPS = 1e-6


def logit(p) -> np.ndarray:
    """log(p / (1 − p)) of scores, clipped to :data:`LOGIT_EPS` from 0 and 1."""
    p = np.clip(np.asarray(p, float), LOGIT_EPS, 1 - LOGIT_EPS)
    return np.log(p / (1 - p))


def relay(gen: Generator[object, None, R], each: Callable[[object], object]) -> Generator[object, None, R]:
    """Drive a progress generator, yielding ``each(item)`` for its items; return its value
    (``yield from relay(...)`` passes a sub-step's progress on in the caller's terms)."""
    while True:
        try:
            item = next(gen)
        except StopIteration as stop:
            return stop.value
        yield each(item)


def run_generator(gen: Generator[object, None, R], on_progress: Callable[[object], None] | None = None) -> R:
    """Drive a progress generator to its end and return its value."""
    while True:
        try:
            item = next(gen)
        except StopIteration as stop:
            return stop.value
        if on_progress is not None:
            on_progress(item)
