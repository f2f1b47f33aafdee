"""SQS failures translated where they arise (sqs/errors.py): the class, retryable, code and
delivered a caller reads are decided once, and botocore stops at the SQS adapter."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

import login_etl
from login_etl.invocation import Context
from login_etl.queue import Queue
from login_etl.sqs.errors import (
    AccessDenied,
    ContentRefused,
    QueueError,
    QueueGone,
    translated,
)

# where login_etl is imported from (a mutation run stages its own copy)
PACKAGE = Path(login_etl.__file__).resolve().parent


def client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "secret 192.0.2.1"},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "GetQueueAttributes")


@pytest.mark.parametrize(("exc", "kind", "retryable", "code"), [
    (client_error("AWS.SimpleQueueService.NonExistentQueue", 400), QueueGone, False,
     "AWS.SimpleQueueService.NonExistentQueue"),
    (client_error("QueueDoesNotExist", 400), QueueGone, False, "QueueDoesNotExist"),
    (client_error("AccessDenied", 403), AccessDenied, False, "AccessDenied"),
    (client_error("KMS.AccessDeniedException", 400), AccessDenied, False,
     "KMS.AccessDeniedException"),
    (client_error("BatchRequestTooLong", 400), ContentRefused, False, "BatchRequestTooLong"),
    (client_error("", 413), ContentRefused, False, ""),
    (client_error("ServiceUnavailable", 503), QueueError, True, "ServiceUnavailable"),
    (client_error("InvalidClientTokenId", 403), AccessDenied, False, "InvalidClientTokenId"),
    (client_error("UnrecognizedClientException", 400), AccessDenied, False,
     "UnrecognizedClientException"),
    (client_error("SignatureDoesNotMatch", 403), AccessDenied, False, "SignatureDoesNotMatch"),
    (client_error("InvalidSecurity", 403), AccessDenied, False, "InvalidSecurity"),
    (EndpointConnectionError(endpoint_url="http://secret-host"), QueueError, True, ""),
    (ValueError("192.0.2.1"), QueueError, False, ""),
], ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v))
def test_each_failure_is_translated_once_into_what_callers_read(
        exc: BaseException, kind: type[QueueError], retryable: bool, code: str) -> None:
    error = translated(exc, "get_queue_attributes on source queue")
    assert type(error) is kind and error.retryable is retryable and error.code == code
    assert str(error).startswith("get_queue_attributes on source queue failed: ")
    assert "192.0.2.1" not in str(error) and "secret" not in str(error)
    assert error.delivered == []


@pytest.mark.parametrize("code", ["BatchRequestTooLong", "MessageTooLong",
                                  "RequestEntityTooLarge", "InvalidMessageContents",
                                  "InvalidParameterValue"])
def test_a_batch_refused_for_its_content_can_be_split(code: str) -> None:
    """Each code by which SQS (or a server of another make) refuses what a batch holds: the
    send is split in halves instead of failing the hand-off; the query protocol's spelling
    (QueryErrorCode) counts too."""
    assert type(translated(client_error(code, 400), "send")) is ContentRefused
    query = ClientError({"Error": {"Code": "Sender", "QueryErrorCode": f"AWS.SimpleQueueService.{code}"},
                         "ResponseMetadata": {"HTTPStatusCode": 400}}, "SendMessageBatch")
    assert type(translated(query, "send")) is ContentRefused
    assert type(translated(client_error("Sender", 400), "send")) is QueueError


def test_a_code_from_the_server_is_cut_and_an_answer_without_one_has_none() -> None:
    """The code is the server's text: at most 64 characters in the error and its message."""
    long = translated(client_error("C" * 100, 400), "q")
    assert long.code == "C" * 63 + "…" and str(long) == f"q failed: ClientError:{'C' * 63}…"
    bare = ClientError({"ResponseMetadata": {"HTTPStatusCode": 400}}, "GetQueueAttributes")
    assert translated(bare, "q").code == "" and str(translated(bare, "q")) == "q failed: ClientError:?"
    error = QueueError("x")
    assert (error.retryable, error.code, error.delivered) == (True, "", [])


def test_what_was_delivered_is_a_new_error_of_the_same_kind() -> None:
    cause = client_error("AccessDenied", 403)
    error = translated(cause, "send_message_batch on dlq queue")
    error.__cause__ = cause
    told = error.having_delivered(["a", "b"])
    assert type(told) is AccessDenied and told.delivered == ["a", "b"]
    assert (str(told), told.retryable, told.code, told.__cause__) == (
        str(error), False, "AccessDenied", cause)
    assert error.delivered == [] and QueueError("x").delivered == []
    assert "delivered" not in vars(QueueError)


class RefusingClient:
    def __init__(self, code: str, status: int) -> None:
        self.code, self.status = code, status

    def get_queue_attributes(self, **_: Any) -> Any:
        raise client_error(self.code, self.status)


@pytest.mark.parametrize(("code", "status", "kind", "said", "exit_code"), [
    ("AWS.SimpleQueueService.NonExistentQueue", 400, QueueGone,
     "queue does not exist: http://127.0.0.1:1/000000000000/q", 2),
    ("AccessDenied", 403, AccessDenied,
     "access denied to queue http://127.0.0.1:1/000000000000/q (AccessDenied)", 1),
    ("InvalidClientTokenId", 403, AccessDenied,
     "access denied to queue http://127.0.0.1:1/000000000000/q (InvalidClientTokenId)", 1),
])
def test_a_queue_check_no_wait_heals_is_one_line_naming_why(
        capsys: pytest.CaptureFixture[str], code: str, status: int, kind: type[QueueError],
        said: str, exit_code: int) -> None:
    queue = Queue(RefusingClient(code, status),  # type: ignore[arg-type]
                  "http://127.0.0.1:1/000000000000/q")
    with pytest.raises(kind) as caught:
        queue.depth()
    assert caught.value.retryable is False
    with pytest.raises(SystemExit) as ended:
        Context({}).refuse_queue(queue, caught.value)
    assert ended.value.code == exit_code
    err = capsys.readouterr().err
    assert said in err and err.count("\n") == 1


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_only_the_sqs_adapter_imports_botocore() -> None:
    adapter = {"queue.py", "redrive.py"}
    importing = sorted(
        str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py")
        if any(name.split(".")[0] in ("botocore", "boto3") for name in _imports(path)))
    assert importing and all(name in adapter or name.startswith("sqs/") for name in importing), \
        importing


def test_retrying_holds_policies_only() -> None:
    """No driver, no SDK, no HTTP reader, no adapter's table: the predicates come from the
    adapters' error types."""
    imported = _imports(PACKAGE / "retrying.py")
    assert not {name for name in imported
                if name.split(".")[0] in ("botocore", "boto3", "psycopg", "psycopg_pool")
                or name.startswith(("login_etl.sqs", "login_etl.pgerrors", "login_etl.store"))}
