"""Small helpers shared by the CLI, the widgets and the tests."""
from __future__ import annotations

from typing import Callable, Generator, TypeVar

R = TypeVar("R")


def run_generator(gen: Generator[object, None, R], on_progress: Callable[[object], None] | None = None) -> R:
    """Drive a progress generator to its end and return its value."""
    while True:
        try:
            item = next(gen)
        except StopIteration as stop:
            return stop.value
        if on_progress is not None:
            on_progress(item)
