"""The commands that move messages between files and queues: `load` (events from a file or the
bundled sample into the source queue) and `dlq redrive` (dead letters back to the source queue).

Registered on the command group by cli.py; they share its Context (invocation.py).
"""

from __future__ import annotations

import gzip
import json
import signal
import threading
import uuid
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path

import click

from login_etl.fifo import group_of_event, valid_id
from login_etl.invocation import EXIT_UNAVAILABLE, Context, fail, pass_context
from login_etl.queue import QueueError
from login_etl.redrive import redrive


def read_events(path: Path | None) -> Iterator[str]:
    """Message bodies from a JSON array, JSON lines, optionally gzipped; or the bundled sample."""
    if path is None:
        raw = resources.files("login_etl").joinpath("data/sample_data.json").read_bytes()
    else:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            fail(f"cannot read {path}: {exc.strerror}")
    try:
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        # A byte-order mark is not part of the first event.
        text = raw.decode("utf-8-sig")
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
        fail(f"{path}: not UTF-8 JSON (or a broken .gz): {type(exc).__name__}")
    if not text.strip():
        fail(f"{path}: no events in the file")
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except ValueError as exc:
            fail(f"{path}: not a JSON array: {exc}")
        for item in items:
            yield json.dumps(item)
    else:
        for line in text.splitlines():
            if line.strip():
                yield line


@click.command()
@click.argument("file", required=False, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--sample", is_flag=True, help="Send the bundled 100-event sample.")
@click.option("--repeat", default=1, show_default=True, type=click.IntRange(min=1),
              help="Send the events this many times.")
@click.option("--group-by", "group_by", metavar="FIELD", default="user_id", show_default=True,
              help="FIFO queue: the event field whose value is the message group.")
@click.option("--group-id", "group_id", metavar="ID",
              help="FIFO queue: send every event in this one group instead.")
@pass_context
def load(obj: Context, file: Path | None, sample: bool, repeat: int, group_by: str,
         group_id: str | None) -> None:
    """Send events from FILE (JSON array, JSON lines, .gz) or the sample to the source queue.

    Into a FIFO queue each event goes in a message group (its user_id unless told otherwise)
    with a deduplication id of its own, in order (one batch at a time).
    """
    if (file is None) == (not sample):
        fail("give either FILE or --sample")
    if group_id is not None and not valid_id(group_id):
        fail("--group-id must be 1-128 characters of letters, digits and ASCII punctuation")
    bodies = list(read_events(None if sample else file)) * repeat
    source = obj.source()
    obj.check_queue(source)
    if not source.fifo and (group_id is not None or group_by != "user_id"):
        fail(f"--group-by and --group-id are for FIFO queues; {source.url} is a standard queue")
    groups = dedup = None
    if source.fifo:
        groups = [group_id or group_of_event(body, group_by) for body in bodies]
        # Unique per event of this run, the same on a retried send (SQS keeps one of them).
        run = uuid.uuid4().hex
        dedup = [f"{run}-{i}" for i in range(len(bodies))]
    starts = range(0, len(bodies), 10)
    sent = 0
    refused: list[int] = []
    show = len(bodies) >= 5000

    def send(start: int) -> list[int]:
        end = start + 10
        return [start + i for i in source.send_messages(
            bodies[start:end], groups=groups and groups[start:end],
            dedup_ids=dedup and dedup[start:end])]

    # A FIFO queue keeps the order of sends: one batch after the other.
    with ThreadPoolExecutor(1 if source.fifo else 4) as pool:
        for start, failed in zip(starts, pool.map(send, starts), strict=True):
            refused += failed
            sent += min(10, len(bodies) - start) - len(failed)
            if show and sent % 5000 < 10:
                click.echo(f"sent {sent}/{len(bodies)}", err=True)
    click.echo(f"sent {sent} messages to {source.url}")
    if refused:
        numbers = ", ".join(str(i + 1) for i in refused[:10]) + (", ..." if len(refused) > 10
                                                                  else "")
        fail(f"SQS refused {len(refused)} events (over its message size limit, or characters "
             f"it does not accept): event {numbers}", EXIT_UNAVAILABLE)


@click.group()
def dlq() -> None:
    """Dead-letter queue operations."""


@dlq.command("redrive")
@click.option("--max", "limit", type=int, help="Move at most this many messages.")
@pass_context
def dlq_redrive(obj: Context, limit: int | None) -> None:
    """Move DLQ messages back to the source queue (after a fix); safe to interrupt.

    Moves at most what the DLQ holds when it starts (a message still bad comes straight back).
    Needs the masking key: each copy carries a sealed ledger id so it is stored at most once.
    """
    # Without a key this raises ConfigError, which main() turns into one line and exit 2.
    masker = obj.masker()
    source, dead = obj.checked_queues(masker)
    interrupted = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: interrupted.set())
    signal.signal(signal.SIGTERM, lambda *_: interrupted.set())

    def progress(moved: int) -> None:
        if moved % 100 < 10:
            click.echo(f"moved {moved}", err=True)

    try:
        result = redrive(dead, source, limit, progress, interrupted.is_set)
    except QueueError as exc:
        fail(str(exc), EXIT_UNAVAILABLE)
    click.echo(f"moved {result.moved} messages from {dead.url} to {source.url}"
               + (" (interrupted)" if interrupted.is_set() else ""))
    if result.refused:
        fail(f"{result.refused} messages stay in the DLQ: the source queue refused their copy "
             "(no room for the redrive mark under SQS's message size limit)", EXIT_UNAVAILABLE)
