"""The start of the `run` daemon: SQS and PostgreSQL waited for while merely unreachable.

A replica started during an outage (an orchestrator restarting it, a node coming up before the
database) waits, unready (`/readyz` 503, `/healthz` 200) and with one line per
LOG_EVERY_SECONDS, instead of exiting: an exit would put it into the orchestrator's crash-loop
back-off (up to minutes) after the outage ends. It tries again every RETRY_SECONDS, so it
begins within about a second of the dependency's return. What no wait heals (no such queue,
access denied, a wrong password, no such database or role) still exits at once, with the
same line and code as before.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

from login_etl import logs
from login_etl.health import Health
from login_etl.invocation import Context
from login_etl.masking import Masker
from login_etl.pgerrors import StoreError
from login_etl.queue import Queue, QueueError
from login_etl.store import Store

T = TypeVar("T")
log = logs.get("login_etl.startup")
# Between attempts while a dependency is unreachable: its return is seen within this long.
RETRY_SECONDS = 0.5
# One `waiting_for_dependency` line per this long, however many attempts.
LOG_EVERY_SECONDS = 10.0


class Stopped(Exception):
    """A signal came while waiting: the daemon ends without having started."""


def until_reachable(dependency: str, attempt: Callable[[], T], stop: threading.Event) -> T:
    """attempt() until it succeeds; a StoreError or QueueError a wait can heal is waited out,
    any other error raised at once. Raises Stopped when `stop` is set meanwhile."""
    started = time.monotonic()
    logged = float("-inf")
    while True:
        try:
            return attempt()
        except (StoreError, QueueError) as exc:
            if not exc.retryable:
                raise
            now = time.monotonic()
            if now - logged >= LOG_EVERY_SECONDS:
                log.warning("waiting_for_dependency", dependency=dependency, error=str(exc),
                            waited_seconds=round(now - started, 1))
                logged = now
        if stop.wait(RETRY_SECONDS):
            raise Stopped()


def queues(obj: Context, masker: Masker, health: Health,
           stop: threading.Event) -> tuple[Queue, Queue]:
    """The source queue and its DLQ once SQS answers for both (the DLQ's URL may come from the
    source's RedrivePolicy, so it is looked up only once SQS answers)."""
    checking: list[Queue] = []

    def attempt() -> tuple[Queue, Queue]:
        checking[:] = [obj.source(masker)]
        checking[0].depth()
        checking.append(obj.dlq(masker))
        checking[1].depth()
        return checking[0], checking[1]

    try:
        found = until_reachable("sqs", attempt, stop)
    except QueueError as exc:
        obj.refuse_queue(checking[-1], exc)
    health.sqs_ok = True
    return found


def database(obj: Context, keep_days: int, health: Health,
             stop: threading.Event) -> Store:
    """A store with its pool open and the schema in place, once PostgreSQL answers."""
    store = obj.new_store()

    def attempt() -> Store:
        store.open(patient=False)
        store.init_schema(keep_days)
        return store

    try:
        until_reachable("postgres", attempt, stop)
    except BaseException:
        store.close()
        raise
    health.db_ok = True
    return store
