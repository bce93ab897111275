"""The retry policy of every source, sink and lookup that talks to a server."""

from __future__ import annotations

import dataclasses
from typing import Iterator

__all__ = ["RetryPolicy"]


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4
    initial_backoff_seconds: float = 0.5
    max_backoff_seconds: float = 8.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.initial_backoff_seconds < 0:
            raise ValueError("retry policy needs attempts >= 1 and a non-negative backoff")

    def backoffs(self) -> Iterator[float]:
        delay = self.initial_backoff_seconds
        for _ in range(self.attempts - 1):
            yield delay
            delay = min(delay * 2, self.max_backoff_seconds)
