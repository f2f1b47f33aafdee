"""retrying.call: the first attempt runs bare, a failure gets exactly the policy's treatment."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from login_etl import metrics, retrying
from login_etl.sqs.errors import QueueError, translated


def retries(operation: str) -> float:
    return metrics.RETRIES.labels(operation)._value.get()


def flaky(failures: list[Exception]) -> Any:
    calls = []

    def fn(value: int) -> int:
        calls.append(value)
        if failures:
            raise failures.pop(0)
        return value * 2

    fn.calls = calls  # type: ignore[attr-defined]
    return fn


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tenacity.nap.time.sleep", lambda _s: None)


def down() -> Exception:
    """An outage as the SQS adapter hands it to the policy: translated where it arose."""
    return translated(EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
                      "receive_message on source queue")


def test_success_is_one_call_and_no_retry() -> None:
    before = retries("receive")
    fn = flaky([])
    assert retrying.call("receive", fn, 21) == 42
    assert fn.calls == [21] and retries("receive") == before


def test_a_retryable_failure_is_retried_and_counted() -> None:
    before = retries("delete")
    fn = flaky([down(), down()])
    assert retrying.call("delete", fn, 1) == 2
    assert fn.calls == [1, 1, 1] and retries("delete") == before + 2


def test_a_permanent_failure_is_raised_at_once() -> None:
    before = retries("receive")
    denied = ClientError({"Error": {"Code": "AccessDenied"},
                          "ResponseMetadata": {"HTTPStatusCode": 403}}, "ReceiveMessage")
    fn = flaky([translated(denied, "receive_message on source queue")])
    with pytest.raises(QueueError):
        retrying.call("receive", fn, 1)
    assert fn.calls == [1] and retries("receive") == before


def test_attempts_are_bounded_by_the_policy() -> None:
    fn = flaky([down() for _ in range(10)])
    with pytest.raises(QueueError):
        retrying.call("receive", fn, 1)
    assert len(fn.calls) == 4, "the receive policy allows 4 attempts in all, the first included"
