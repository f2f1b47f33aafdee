"""Pipeline.settle with recording fakes: the order of calls is the product's promise.

Commit, then delete; the DLQ hand-off inside the transaction; a failed commit deletes
nothing; halving isolates the one row the database refuses. The fakes only record calls and
keep a committed ledger; tests/integration/test_pipeline.py runs the same against Postgres.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from datetime import date
from typing import Any

import psycopg
import psycopg.errors as pg
import pytest

from login_etl import metrics
from login_etl import pipeline as pipeline_module
from login_etl.messages import Received, Rejection, login_event
from login_etl.pipeline import DLQ_REFUSED, Item, Outcome, Pipeline
from login_etl.queue import QueueError
from login_etl.store import StoreError
from tests.unit.fakes import Calls, RecordingQueue, RecordingStore


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tenacity.nap.time.sleep", lambda _s: None)


@pytest.fixture
def calls() -> Calls:
    return []


@pytest.fixture
def store(calls: Calls) -> RecordingStore:
    return RecordingStore(calls)


@pytest.fixture
def source(calls: Calls) -> RecordingQueue:
    return RecordingQueue(calls, "source")


@pytest.fixture
def dlq(calls: Calls) -> RecordingQueue:
    return RecordingQueue(calls, "dlq")


@pytest.fixture
def pipeline(store: RecordingStore, source: RecordingQueue, dlq: RecordingQueue) -> Pipeline:
    return Pipeline(store, source, dlq)  # type: ignore[arg-type]


def good(message_id: str, user_id: str | None = None) -> Item:
    received = Received(message_id, f"rh-{message_id}", "{}", 0)
    return received, login_event(message_id, user_id or f"u-{message_id}", "ios", "h1.k.ip",
                                 "h1.k.dev", None, 1, date(2024, 1, 1))


def bad(message_id: str, reason: str = "invalid_json") -> Item:
    return Received(message_id, f"rh-{message_id}", "{", 0), Rejection(message_id, reason)


def names(calls: Calls) -> list[str]:
    return [name for name, _ in calls]


def count(name: str, *labels: str) -> float:
    return getattr(metrics, name).labels(*labels)._value.get()


# -- the order --------------------------------------------------------------------------------


def test_commit_comes_before_the_delete(pipeline: Pipeline, store: RecordingStore,
                                        calls: Calls) -> None:
    outcome = pipeline.settle([good("a"), good("b")])
    assert calls == [("begin", None), ("claim", ["a", "b"]), ("insert", ["a", "b"]),
                     ("commit", None), ("source.delete", ["a", "b"])]
    assert (outcome.stored, outcome.duplicates, outcome.rejected) == (2, 0, [])
    assert outcome.not_deleted == [] and outcome.left_in_queue == []
    assert store.ledger == {"a", "b"} and [e.message_id for e in store.rows] == ["a", "b"]
    assert 0 < outcome.commit_seconds < 5 and 0 < outcome.delete_seconds < 5


def test_a_settled_batch_sets_the_last_commit_time(pipeline: Pipeline) -> None:
    metrics.LAST_COMMIT.set(0)
    pipeline.settle([good("a")])
    assert abs(metrics.LAST_COMMIT._value.get() - time.time()) < 60


def test_the_dlq_hand_off_is_inside_the_transaction(pipeline: Pipeline, store: RecordingStore,
                                                    dlq: RecordingQueue, calls: Calls) -> None:
    before = count("REJECTIONS", "invalid_json")
    outcome = pipeline.settle([good("a"), bad("b"), bad("c", "invalid_ip")])
    assert calls == [("begin", None), ("claim", ["a", "b", "c"]), ("insert", ["a"]),
                     ("dlq.send", [("b", "invalid_json"), ("c", "invalid_ip")]),
                     ("commit", None), ("source.delete", ["a", "b", "c"])]
    assert outcome.rejected == [("b", "invalid_json"), ("c", "invalid_ip")]
    assert outcome.stored == 1 and dlq.sent == [("b", "invalid_json"), ("c", "invalid_ip")]
    assert store.outcomes == {"a": "stored", "b": "rejected", "c": "rejected"}
    assert count("REJECTIONS", "invalid_json") == before + 1


def test_a_failed_commit_deletes_nothing(pipeline: Pipeline, store: RecordingStore,
                                         calls: Calls) -> None:
    store.commit_failures = [psycopg.OperationalError("server closed the connection")] * 5
    before = count("IO_ERRORS", "commit")
    with pytest.raises(StoreError) as info:
        pipeline.settle([good("a"), bad("b")])
    assert info.value.retryable is True
    assert str(info.value) == "database unavailable: OperationalError"
    assert names(calls).count("begin") == 5 and names(calls).count("commit_failed") == 5
    assert not any(name.endswith(".delete") for name in names(calls))
    assert store.ledger == set() and store.rows == []
    assert count("IO_ERRORS", "commit") == before + 1


def test_a_commit_retried_hands_a_reject_off_once(pipeline: Pipeline, store: RecordingStore,
                                                  dlq: RecordingQueue, calls: Calls) -> None:
    store.commit_failures = [psycopg.OperationalError("lost")]
    outcome = pipeline.settle([good("a"), bad("b")])
    assert dlq.sent == [("b", "invalid_json")]
    assert names(calls) == ["begin", "claim", "insert", "dlq.send", "commit_failed",
                            "begin", "claim", "insert", "commit", "source.delete"]
    assert outcome.rejected == [("b", "invalid_json")] and outcome.stored == 1
    assert pipeline._handed_off == set()


def test_a_permanent_database_error_is_one_attempt_and_not_retryable(
        pipeline: Pipeline, store: RecordingStore, calls: Calls) -> None:
    store.commit_failures = [pg.UndefinedTable("no user_logins")]
    with pytest.raises(StoreError) as info:
        pipeline.settle([good("a")])
    assert info.value.retryable is False
    assert str(info.value) == "database refused the batch: UndefinedTable:42P01"
    assert names(calls) == ["begin", "claim", "insert", "commit_failed"]


def test_a_failed_hand_off_rolls_back_and_deletes_nothing(pipeline: Pipeline, store: RecordingStore,
                                                          dlq: RecordingQueue, calls: Calls) -> None:
    dlq.fail_after = 1
    items = [good("a"), bad("b"), bad("c")]
    with pytest.raises(QueueError):
        pipeline.settle(items)
    assert names(calls) == ["begin", "claim", "insert", "dlq.send", "rollback"]
    assert store.ledger == set() and store.rows == []
    # the batch comes again: only what the DLQ did not confirm is sent
    dlq.fail_after = None
    calls.clear()
    outcome = pipeline.settle(items)
    assert calls[3] == ("dlq.send", [("c", "invalid_json")])
    assert dlq.sent == [("b", "invalid_json"), ("c", "invalid_json")]
    assert names(calls)[-2:] == ["commit", "source.delete"]
    assert outcome.rejected == [("b", "invalid_json"), ("c", "invalid_json")]


class Log:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.events.append((event, fields))


def test_a_reject_the_dlq_refuses_stays_in_the_source(pipeline: Pipeline, store: RecordingStore,
                                                      dlq: RecordingQueue, calls: Calls,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    log = Log()
    monkeypatch.setattr(pipeline_module, "log", log)
    dlq.refuse = {"c", "d"}
    before = count("REJECTIONS", DLQ_REFUSED)
    outcome = pipeline.settle([good("a"), bad("b"), bad("c"), bad("d")])
    assert names(calls) == ["begin", "claim", "insert", "dlq.send", "unclaim", "commit",
                            "source.delete"]
    assert calls[4] == ("unclaim", ["c", "d"]) and calls[-1] == ("source.delete", ["a", "b"])
    # the reason is a label of login_etl_rejections_total and a word in the log: a contract
    assert outcome.left_in_queue == [("c", "dlq_refused"), ("d", "dlq_refused")]
    assert log.events == [("rejects_left_in_source", {
        "messages": 2, "message_ids": ["c", "d"], "reasons": ["dlq_refused"]})]
    assert outcome.rejected == [("b", "invalid_json")]
    assert store.ledger == {"a", "b"}
    assert pipeline._handed_off == set()
    assert count("REJECTIONS", DLQ_REFUSED) == before + 2
    # nothing left behind: no warning
    pipeline.settle([good("e")])
    assert len(log.events) == 1


# -- halving --------------------------------------------------------------------------------------


@pytest.mark.parametrize("position", [0, 3, 6])
def test_halving_isolates_the_one_row_the_database_refuses(pipeline: Pipeline, store: RecordingStore,
                                                           dlq: RecordingQueue, calls: Calls,
                                                           position: int) -> None:
    items = [good(f"m{i}") for i in range(7)]
    items[position] = good(f"m{position}", user_id="refused")
    store.refuse["refused"] = pg.CheckViolation("new row violates check constraint")
    outcome = pipeline.settle(items)
    bad_id = f"m{position}"
    assert outcome.stored == 6 and outcome.rejected == [(bad_id, "db_rejected:23514")]
    assert sorted(e.message_id for e in store.rows) == sorted(f"m{i}" for i in range(7)
                                                              if i != position)
    assert dlq.sent == [(bad_id, "db_rejected:23514")]
    assert store.ledger == {f"m{i}" for i in range(7)}
    # one delete, of all seven, after the last commit
    assert names(calls).count("source.delete") == 1 and names(calls)[-1] == "source.delete"
    assert calls[-1][1] == [f"m{i}" for i in range(7)]
    # every insert that held the refused row rolled back, each at most half the one before,
    # until the row was alone
    refused = [len(ids) for name, ids in calls if name == "insert" and bad_id in ids]
    assert refused[0] == 7 and refused[-1] == 1
    assert all(later <= (earlier + 1) // 2 for earlier, later in itertools.pairwise(refused))
    assert names(calls).count("rollback") == len(refused)
    # ... while the halves without it committed as they were
    committed = [ids for name, ids in calls if name == "insert" and bad_id not in ids]
    assert sorted(i for ids in committed for i in ids) == sorted(f"m{i}" for i in range(7) if i != position)


def test_a_row_refused_as_text_the_connection_cannot_encode(pipeline: Pipeline,
                                                            store: RecordingStore) -> None:
    store.refuse["u-b"] = UnicodeEncodeError("latin-1", "ü", 0, 1, "not encodable")
    outcome = pipeline.settle([good("a"), good("b")])
    assert outcome.rejected == [("b", "db_rejected:encoding")] and outcome.stored == 1


def test_a_refused_row_without_sqlstate(pipeline: Pipeline, store: RecordingStore) -> None:
    store.refuse["u-a"] = psycopg.DataError("no code")
    outcome = pipeline.settle([good("a")])
    assert outcome.rejected == [("a", "db_rejected:unknown")]


def test_a_reject_whose_ledger_entry_is_refused_stays_in_the_source(
        pipeline: Pipeline, store: RecordingStore, source: RecordingQueue, calls: Calls) -> None:
    store.refuse_claim = {"b"}
    outcome = pipeline.settle([good("a"), bad("b")])
    assert outcome.left_in_queue == [("b", "ledger_refused")]
    assert outcome.stored == 1 and outcome.rejected == []
    assert calls[-1] == ("source.delete", ["a"])


# -- duplicates, deletes ----------------------------------------------------------------------------


def test_ids_already_in_the_ledger_are_duplicates_and_deleted(pipeline: Pipeline,
                                                              store: RecordingStore, dlq: RecordingQueue,
                                                              calls: Calls) -> None:
    store.ledger = {"a", "b"}
    outcome = pipeline.settle([good("a"), bad("b"), good("c")])
    assert (outcome.stored, outcome.duplicates, outcome.rejected) == (1, 2, [])
    assert calls[2] == ("insert", ["c"]) and dlq.sent == []
    assert calls[-1] == ("source.delete", ["a", "b", "c"])


def test_the_same_message_twice_in_a_batch_is_one_row(pipeline: Pipeline, store: RecordingStore,
                                                      calls: Calls) -> None:
    before = count("MESSAGES", "duplicate")
    outcome = pipeline.settle([good("a"), good("b"), good("a")])
    assert calls[1] == ("claim", ["a", "b"])
    assert (outcome.stored, outcome.duplicates) == (2, 1)
    assert calls[-1] == ("source.delete", ["a", "b", "a"])
    assert count("MESSAGES", "duplicate") == before + 1


def test_keep_messages_deletes_nothing(store: RecordingStore, source: RecordingQueue, dlq: RecordingQueue,
                                       calls: Calls) -> None:
    outcome = Pipeline(store, source, dlq, keep_messages=True).settle(  # type: ignore[arg-type]
        [good("a"), bad("b")])
    assert names(calls) == ["begin", "claim", "insert", "dlq.send", "commit"]
    assert outcome.stored == 1 and outcome.delete_seconds == 0.0


def test_a_failed_delete_after_the_commit_is_reported_not_raised(
        pipeline: Pipeline, source: RecordingQueue, store: RecordingStore) -> None:
    source.undeletable = {"b"}
    assert pipeline.settle([good("a"), good("b")]).not_deleted == ["b"]
    source.delete_error = QueueError("sqs down")
    outcome = pipeline.settle([good("c"), good("d")])
    assert outcome.not_deleted == ["c", "d"] and outcome.stored == 2
    assert store.ledger == {"a", "b", "c", "d"}


def test_counts_reach_the_metrics(pipeline: Pipeline) -> None:
    before = {o: count("MESSAGES", o) for o in ("stored", "duplicate", "rejected")}
    pipeline.settle([good("a"), good("b"), bad("c", "too_long:locale"), good("a")])
    after = {o: count("MESSAGES", o) for o in ("stored", "duplicate", "rejected")}
    assert {o: after[o] - before[o] for o in after} == {"stored": 2, "duplicate": 1, "rejected": 1}


def test_freshness_is_the_age_at_commit_in_seconds(pipeline: Pipeline) -> None:
    def sample(suffix: str) -> float:
        return metrics.REGISTRY.get_sample_value(f"login_etl_freshness_seconds_{suffix}") or 0.0

    sum_before, count_before = sample("sum"), sample("count")
    received, event = good("fresh")
    sent = int(time.time() * 1000) - 5_000
    pipeline.settle([(dataclasses.replace(received, sent_timestamp_ms=sent), event)])
    assert sample("count") - count_before == 1
    assert 5.0 <= sample("sum") - sum_before < 7.0


def test_a_redriven_copy_is_claimed_as_redriven_on_its_origin_day(
        pipeline: Pipeline, store: RecordingStore) -> None:
    received, event = good("again")
    redriven = dataclasses.replace(received, redrive_day=19_000)
    pipeline.settle([good("first"), (redriven, event)])
    assert [(c[0], c[2], c[3]) for c in store.claims] == [
        ("first", good("first")[0].day, False), ("again", 19_000, True)]


def test_outcomes_merge() -> None:
    one = Outcome(stored=1, duplicates=2, rejected=[("a", "x")], not_deleted=["n"],
                  left_in_queue=[("l", "r")], commit_seconds=1.0)
    two = Outcome(stored=3, duplicates=4, rejected=[("b", "y")], not_deleted=["m"],
                  left_in_queue=[("k", "s")])
    assert one.merge(two) is one
    assert one == Outcome(stored=4, duplicates=6, rejected=[("a", "x"), ("b", "y")],
                          not_deleted=["n", "m"], left_in_queue=[("l", "r"), ("k", "s")],
                          commit_seconds=1.0)
    assert Outcome() == Outcome(0, 0, [], [], [], 0.0, 0.0)


