"""What every command needs: settings read once, clients built on first use, one-line failures.

A command's failure is one line on stderr and an exit code, never a traceback: configuration
errors exit 2, an unreachable or refusing dependency exits 1.
"""

from __future__ import annotations

import json
import sys
from typing import NoReturn
from urllib.parse import urlsplit

import click

from login_etl import logs
from login_etl.fifo import is_fifo
from login_etl.masking import Masker
from login_etl.pgerrors import StoreError
from login_etl.queue import AccessDenied, Queue, QueueError, QueueGone, SqsApi
from login_etl.settings import ConfigError, Settings
from login_etl.sqs.choose import make_client
from login_etl.store import Bounds, Store

EXIT_CONFIG = 2
EXIT_UNAVAILABLE = 1
# unmask: the token does not open with the configured keys.
EXIT_REFUSED = 1


def fail(message: str, code: int = EXIT_CONFIG) -> NoReturn:
    # A server's words may be in it: each line made printable before a terminal shows it.
    shown = "\n".join(logs.printable(line, None) for line in message.split("\n"))
    click.echo(f"login-etl: error: {shown}", err=True)
    sys.exit(code)


def dlq_url_for(client: SqsApi, queue_url: str, configured: str | None) -> str:
    """The configured DLQ, else the queue's RedrivePolicy target, else `<queue>-dlq`.

    The URL is built on the source queue's own scheme and host (account and name from the
    target ARN), so it works wherever the source URL works.
    """
    if configured:
        return configured
    try:
        policy = Queue(client, queue_url).attribute("RedrivePolicy")
    except QueueError:
        policy = None
    if policy:
        try:
            arn = json.loads(policy).get("deadLetterTargetArn", "")
        # a RedrivePolicy that is not a JSON object: as if there were none
        except (ValueError, AttributeError, RecursionError):
            arn = ""
        parts = arn.split(":") if isinstance(arn, str) else []
        if len(parts) == 6 and parts[5]:
            base = urlsplit(queue_url)
            return f"{base.scheme}://{base.netloc}/{parts[4]}/{parts[5]}"
    url = queue_url.rstrip("/")
    # A FIFO queue's DLQ must be FIFO too, and a FIFO queue's name ends in .fifo.
    if is_fifo(url):
        return url[:-len(".fifo")] + "-dlq.fifo"
    return url + "-dlq"



class Context:
    """Settings read once per invocation; clients built only when a command needs them."""

    def __init__(self, overrides: dict[str, str | None]) -> None:
        self._overrides = overrides
        self._settings: Settings | None = None
        self._client: SqsApi | None = None

    @property
    def settings(self) -> Settings:
        """Read and checked once, when a command first needs them: `<command> --help` and
        `keygen` must work while the environment is wrong (keygen is how one fixes it)."""
        if self._settings is None:
            try:
                self._settings = Settings.from_env().with_overrides(**self._overrides)
            except ConfigError as exc:
                fail(str(exc))
            logs.configure(self._settings.log_format, self._settings.log_level)
        return self._settings

    @settings.setter
    def settings(self, value: Settings) -> None:
        self._settings = value

    @property
    def client(self) -> SqsApi:
        if self._client is None:
            self._client = make_client(self.settings)
        return self._client

    def source(self, sealer: Masker | None = None) -> Queue:
        """The source queue; with a sealer it honours sealed ledger ids of redriven copies."""
        return Queue(self.client, self.settings.queue_url, "source", sealer)

    def dlq(self, sealer: Masker | None = None) -> Queue:
        """The DLQ; with a sealer its hand-offs carry their origin (for an exact redrive)."""
        url = dlq_url_for(self.client, self.settings.queue_url, self.settings.dlq_url)
        return Queue(self.client, url, "dlq", sealer)

    def new_store(self) -> Store:
        """The store, not connected yet."""
        settings = self.settings
        return Store(settings.database_url, pool_size=settings.db_pool_size, bounds=Bounds(
            statement_ms=settings.statement_timeout_ms, lock_ms=settings.lock_timeout_ms,
            idle_in_transaction_ms=settings.idle_in_transaction_timeout_ms))

    def store(self) -> Store:
        """The store, connected (else one line and an exit)."""
        store = self.new_store()
        try:
            store.open()
        except StoreError as exc:
            fail(str(exc), EXIT_UNAVAILABLE)
        return store

    def masker(self) -> Masker:
        return Masker(self.settings.masking_keys or (self.settings.writing_key,),
                      self.settings.masking_mode)

    def checked_queues(self, sealer: Masker | None = None) -> tuple[Queue, Queue]:
        """The source queue and its DLQ, both known to exist (else one line and an exit)."""
        source, dlq = self.source(sealer), self.dlq(sealer)
        self.check_queue(source)
        self.check_queue(dlq)
        return source, dlq

    def check_queue(self, queue: Queue) -> None:
        try:
            queue.depth()
        except QueueError as exc:
            self.refuse_queue(queue, exc)

    def refuse_queue(self, queue: Queue, exc: QueueError) -> NoReturn:
        """One line and an exit for a queue that failed its check."""
        if isinstance(exc, QueueGone):
            fail(f"queue does not exist: {queue.url}")
        if isinstance(exc, AccessDenied):
            # Reachable, but no wait heals it: the credentials or the policy must change
            # (exit 1, as for a wrong database password).
            fail(f"access denied to queue {queue.url} ({exc.code}): check the credentials "
                 "and that their policy allows this queue's SQS actions", EXIT_REFUSED)
        fail(f"cannot reach SQS at {queue.url}: {exc}", EXIT_UNAVAILABLE)


# Hands each command the invocation's Context (made once by the group).
pass_context = click.make_pass_decorator(Context)
