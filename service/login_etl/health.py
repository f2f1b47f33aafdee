"""What /healthz and /readyz answer from: state the worker's threads keep as they go.

A probe reads these fields and nothing else, so any number of probes costs no database
connection and no SQS call, and cannot push a settler past the pool timeout.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

# With nothing to commit the worker pings the database this often, so an idle daemon's
# last database success stays fresh; older than DB_STALE_SECONDS means not ready.
DB_PING_SECONDS = 10.0
DB_STALE_SECONDS = 60.0


class Health:
    """Liveness ticks per thread and the last success against each dependency.

    Setting `sqs_ok` or `db_ok` to True records a success at that moment (monotonic clock),
    so the threads that already report their state also keep the timestamps.
    """

    def __init__(self) -> None:
        self.ticks: dict[str, float] = {}
        self.threads: Sequence[threading.Thread] = ()
        now = time.monotonic()
        # The worker starts after the queues and the schema were checked: both just answered.
        self.sqs_success_at = now
        self.db_success_at = now
        self._sqs_ok = True
        self._db_ok = True

    @property
    def sqs_ok(self) -> bool:
        return self._sqs_ok

    @sqs_ok.setter
    def sqs_ok(self, ok: bool) -> None:
        if ok:
            self.sqs_success_at = time.monotonic()
        self._sqs_ok = ok

    @property
    def db_ok(self) -> bool:
        return self._db_ok

    @db_ok.setter
    def db_ok(self, ok: bool) -> None:
        if ok:
            self.db_success_at = time.monotonic()
        self._db_ok = ok

    def tick(self, name: str) -> None:
        self.ticks[name] = time.monotonic()

    def watch(self, threads: Sequence[threading.Thread]) -> None:
        """Threads that must stay alive: one that ended is stalled at once, not `limit` later."""
        self.threads = threads

    def stalled(self, limit: float) -> list[str]:
        now = time.monotonic()
        gone = [t.name for t in self.threads if not t.is_alive()]
        return gone + [name for name, at in self.ticks.items()
                       if now - at > limit and name not in gone]

    def db_ready(self) -> bool:
        return self._db_ok and time.monotonic() - self.db_success_at < DB_STALE_SECONDS

    def db_ping_due(self) -> bool:
        """No database success for DB_PING_SECONDS: time for the worker to look itself."""
        return time.monotonic() - self.db_success_at >= DB_PING_SECONDS

    def ages(self) -> dict[str, float]:
        """Seconds since the last success against each dependency, for /readyz's answer."""
        now = time.monotonic()
        return {"postgres": round(now - self.db_success_at, 1),
                "sqs": round(now - self.sqs_success_at, 1)}
