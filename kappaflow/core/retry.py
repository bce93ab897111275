"""The retry policy of every source, sink and lookup that talks to a server, and the one way an
error is shortened for a log line or a dead letter.

Retries run on tenacity (already installed with apache-beam[gcp]): attempts, exponential backoff capped
at a maximum, which errors are worth another attempt, and a hook per retry for the counters.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable, Iterator, Optional, TypeVar, Union

import tenacity

__all__ = ["RetryPolicy", "brief_error"]

_LOG = logging.getLogger(__name__)
T = TypeVar("T")
Errors = Union[type[BaseException], tuple[type[BaseException], ...]]


def brief_error(err: BaseException, limit: int = 300) -> str:
    """The first line of an error, at most `limit` characters (its type when it has no text):
    what a log line or a dead letter's reason quotes."""
    text = str(err).strip()
    return text.splitlines()[0][:limit] if text else type(err).__name__


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """`attempts` in all; after the n-th failure, wait initial × 2^(n-1) seconds, at most the maximum
    (the first wait is the initial one whatever the maximum)."""

    attempts: int = 4
    initial_backoff_seconds: float = 0.5
    max_backoff_seconds: float = 8.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.initial_backoff_seconds < 0:
            raise ValueError("retry policy needs attempts >= 1 and a non-negative backoff")

    def backoff_after(self, failures: int) -> float:
        """Seconds to wait after the `failures`-th failed attempt."""
        if failures <= 1:
            return self.initial_backoff_seconds
        return min(self.initial_backoff_seconds * 2 ** (failures - 1), self.max_backoff_seconds)

    def backoffs(self) -> Iterator[float]:
        """Every wait of a call that fails on every attempt, in order."""
        return (self.backoff_after(n) for n in range(1, self.attempts))

    def call(self, what: str, action: Callable[[], T], retry_on: Errors = Exception, give_up_on: Errors = (),
             on_retry: Optional[Callable[[], None]] = None) -> T:
        """`action()`, tried again after a `retry_on` error (not a `give_up_on` one) until the
        attempts are spent; then its last error is raised. `what` names it in the log lines."""

        def worth_retrying(err: BaseException) -> bool:
            return isinstance(err, retry_on) and not isinstance(err, give_up_on)

        def before_sleep(state: tenacity.RetryCallState) -> None:
            _LOG.warning("%s failed, retrying in %.1fs: %s", what, state.next_action.sleep,
                         brief_error(state.outcome.exception()))
            if on_retry is not None:
                on_retry()

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.attempts),
            wait=lambda state: self.backoff_after(state.attempt_number),
            retry=tenacity.retry_if_exception(worth_retrying),
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            return retrying(action)
        except BaseException as err:
            if worth_retrying(err):
                _LOG.warning("%s failed after %d attempts: %s", what, self.attempts, brief_error(err))
            raise
