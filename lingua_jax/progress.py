"""Progress with an ETA for long loops, through absl logging (one line every few seconds)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from absl import logging

T = TypeVar("T")


def progress(items: Iterable[T], total: int, what: str, every_s: float = 10.0) -> Iterator[T]:
    """Yield `items`, logging 'what: i/total, elapsed, ETA' at most every `every_s` seconds, and at the end
    unless the loop was a single quick step (a loop inside a loop that logs its own progress)."""
    start = last = time.monotonic()
    for i, item in enumerate(items, 1):
        yield item
        now = time.monotonic()
        if now - last >= every_s or (i == total and (total > 1 or now - start >= every_s)):
            last = now
            elapsed = now - start
            eta = elapsed / i * (total - i)
            logging.info("%s: %d/%d, %.0f s elapsed, ETA %.0f s", what, i, total, elapsed, eta)
