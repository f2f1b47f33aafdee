"""The same checks on a second SQS implementation, moto's server, with each client: the lean
client must not be tuned to LocalStack's quirks alone."""

from __future__ import annotations

from tests.integration import test_pipeline as pipeline
from tests.integration.conftest import both_clients
from tests.integration.stack import Stack


def test_moto_is_not_localstack(moto_stack: Stack) -> None:
    assert ":4566" not in moto_stack.queue_url
    assert moto_stack.env()["LOGIN_ETL_QUEUE_URL"] == moto_stack.queue_url


@both_clients
def test_sample_on_moto(moto_stack: Stack) -> None:
    pipeline.test_sample_gives_99_rows_and_1_dlq_message(moto_stack)


@both_clients
def test_redelivery_on_moto(moto_stack: Stack) -> None:
    """test_pipeline's keep-messages redelivery test. moto picks the messages of a receive
    before it marks them received, outside its queue lock, so two pollers receiving at once
    can both get one message: at least once, as SQS itself allows. The ledger has to make
    that a no-op too, so the second run's duplicates are counted as at least 100, not 100."""
    assert pipeline.keep_messages_then_run(moto_stack)["duplicates"] >= 100
