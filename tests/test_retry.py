"""The one retry policy (kappaflow/core/retry.py) and the one error brief of dead letters."""

from __future__ import annotations

import pytest

from kappaflow.core.retry import RetryPolicy, brief_error

FAST = RetryPolicy(attempts=3, initial_backoff_seconds=0.01, max_backoff_seconds=0.02)


class Flaky:
    def __init__(self, failures: int, error: type[Exception] = ConnectionError) -> None:
        self.calls, self.failures, self.error = 0, failures, error

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error(f"attempt {self.calls} failed\ntraceback text")
        return "done"


def test_a_call_is_retried_until_it_succeeds_and_each_retry_is_counted():
    action, retries = Flaky(failures=2), []
    assert FAST.call("flaky", action, retry_on=ConnectionError, on_retry=lambda: retries.append(1)) == "done"
    assert (action.calls, len(retries)) == (3, 2)


def test_the_last_error_is_raised_when_the_attempts_are_spent():
    action = Flaky(failures=5)
    with pytest.raises(ConnectionError, match="attempt 3 failed"):
        FAST.call("flaky", action, retry_on=ConnectionError)
    assert action.calls == 3


def test_errors_not_worth_retrying_are_raised_at_once():
    wrong_type, given_up = Flaky(failures=5, error=KeyError), Flaky(failures=5, error=TimeoutError)
    with pytest.raises(KeyError):
        FAST.call("flaky", wrong_type, retry_on=ConnectionError)
    with pytest.raises(TimeoutError):  # a subclass of OSError, given up on explicitly
        FAST.call("flaky", given_up, retry_on=OSError, give_up_on=TimeoutError)
    assert (wrong_type.calls, given_up.calls) == (1, 1)


def test_the_waits_double_up_to_the_maximum():
    policy = RetryPolicy(attempts=5, initial_backoff_seconds=1, max_backoff_seconds=3)
    assert [policy.backoff_after(n) for n in range(1, 5)] == list(policy.backoffs()) == [1, 2, 3, 3]


def test_an_error_brief_is_its_first_line_shortened_or_its_type():
    assert brief_error(ValueError("bad value\n  at line 3")) == "bad value"
    assert brief_error(ValueError("x" * 400)) == "x" * 300
    assert brief_error(ValueError("x" * 400), limit=200) == "x" * 200
    assert brief_error(TimeoutError()) == "TimeoutError"
