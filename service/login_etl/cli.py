"""The login-etl command line. Configuration errors print one line and exit 2, never a traceback."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import sys
import threading
from typing import Any

import click

from login_etl import __version__, ledger, logs
from login_etl.invocation import EXIT_REFUSED, EXIT_UNAVAILABLE, Context, fail, pass_context
from login_etl.masking import Masker, UnmaskError
from login_etl.pgerrors import StoreError
from login_etl.queue import QueueError
from login_etl.queuecommands import dlq, load
from login_etl.settings import ConfigError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="login-etl")
@click.option("--queue-url", help="Source queue URL [env LOGIN_ETL_QUEUE_URL].")
@click.option("--dlq-url", help="Dead-letter queue URL [env LOGIN_ETL_DLQ_URL; default: the "
              "queue's RedrivePolicy target, else <queue>-dlq].")
@click.option("--database-url", help="libpq URI or conninfo [env LOGIN_ETL_DATABASE_URL].")
@click.pass_context
def cli(ctx: click.Context, queue_url: str | None, dlq_url: str | None,
        database_url: str | None) -> None:
    """Move user-login events from SQS into PostgreSQL, masking ip and device_id.

    A message is deleted from the queue only after the transaction holding its row (or its
    hand-off to the dead-letter queue) has committed; a ledger of message ids makes every
    redelivery a no-op. Configuration comes from LOGIN_ETL_* variables (see README).
    """
    ctx.obj = Context({"queue_url": queue_url, "dlq_url": dlq_url, "database_url": database_url})


@cli.command()
@click.option("--until-empty", is_flag=True,
              help="Exit 0 once the queue shows no visible messages and none are held.")
@click.option("--keep-messages", is_flag=True,
              help="Store but never delete; kept messages are released at exit (safe to repeat: "
              "the ledger skips known ids).")
@click.option("--batch-size", type=int, help="Messages per transaction [LOGIN_ETL_BATCH_SIZE].")
@click.option("--batch-window-ms", type=int, help="Longest wait to fill a batch "
              "[LOGIN_ETL_BATCH_WINDOW_MS].")
@click.option("--pollers", type=int, help="Concurrent receive loops [LOGIN_ETL_POLLERS].")
@click.option("--http-port", type=int, help="Port for /metrics, /healthz, /readyz; 0 disables "
              "[LOGIN_ETL_HTTP_PORT].")
@pass_context
def run(obj: Context, until_empty: bool, keep_messages: bool, batch_size: int | None,
        batch_window_ms: int | None, pollers: int | None, http_port: int | None) -> None:
    """Poll, validate, mask, store, then delete — until SIGTERM/SIGINT (or --until-empty).

    Started while SQS or PostgreSQL is unreachable, the daemon waits for it (unready); with
    --until-empty it exits 1 at once instead."""
    from login_etl import http, startup
    from login_etl.health import Health
    from login_etl.statuspage import StatusPage
    from login_etl.worker import Worker

    try:
        settings = obj.settings.with_overrides(batch_size=batch_size,
                                               batch_window_ms=batch_window_ms,
                                               pollers=pollers, http_port=http_port)
        if not settings.pool_size:
            settings = settings.with_overrides(pool_size=settings.pollers + 1)
        obj.settings = settings
        masker = obj.masker()
    except ConfigError as exc:
        fail(str(exc))
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        # A second signal means leave now: held messages return after their visibility timeout.
        if stop.is_set():
            logs.get("login_etl.cli").warning("forced_exit", signal=name)
            os._exit(130)
        logs.get("login_etl.cli").info("signal_received", signal=name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # Not ready until both dependencies answered; the probes answer meanwhile.
    health = Health()
    health.sqs_ok = health.db_ok = False
    table = http.routes(health)
    if settings.http_port:
        try:
            http.serve(settings.http_port, table)
        except OSError as exc:
            fail(f"cannot listen on port {settings.http_port}: {exc.strerror}")

    try:
        if until_empty:
            source, dlq = obj.checked_queues(masker)
        else:
            source, dlq = startup.queues(obj, masker, health, stop)
        try:
            retention = source.retention_seconds()
        except QueueError:
            retention = None
        keep = settings.ledger_retention_days or ledger.keep_days(retention)
        if until_empty:
            store = obj.store()
            store.init_schema(keep)
            health.sqs_ok = health.db_ok = True
        else:
            store = startup.database(obj, keep, health, stop)
    except startup.Stopped:
        return
    worker = Worker(settings, store, source, dlq, masker, until_empty=until_empty,
                    keep_messages=keep_messages, health=health)
    if settings.http_port:
        page = StatusPage(source, dlq, store)
        table.update(page.routes())
        page.start_sampling()
    # The worker closes the store as the last step of its shutdown.
    worker.run(stop)
    if worker.fatal:
        fail(worker.fatal, EXIT_UNAVAILABLE)


def _depths(obj: Context) -> dict[str, dict[str, Any]]:
    result = {}
    for queue in obj.checked_queues():
        depth = queue.depth()
        result[queue.label] = {"url": queue.url, "visible": depth.visible,
                         "in_flight": depth.in_flight, "delayed": depth.delayed}
    return result


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_context
def count(obj: Context, as_json: bool) -> None:
    """Visible, in-flight and delayed messages in the queue and its DLQ."""
    depths = _depths(obj)
    if as_json:
        click.echo(json.dumps(depths))
        return
    for label, d in depths.items():
        click.echo(f"{label:6} visible={d['visible']} in_flight={d['in_flight']} "
                   f"delayed={d['delayed']}  {d['url']}")


@cli.command()
@click.option("--limit", default=10, show_default=True, help="Latest rows to show.")
@click.option("--watch", is_flag=True, help="Keep refreshing in place until Ctrl-C.")
@click.option("--interval", default=2.0, show_default=True, type=click.FloatRange(min=0.5),
              help="Seconds between refreshes with --watch.")
@click.option("--worker-url", help="A running worker's HTTP port, for throughput, rejections and "
              "last commit [default: http://127.0.0.1:<LOGIN_ETL_HTTP_PORT>].")
@pass_context
def status(obj: Context, limit: int, watch: bool, interval: float,
           worker_url: str | None) -> None:
    """Queue depths, throughput, rejections and the latest masked rows (never a message body)."""
    import time

    from rich.console import Console
    from rich.live import Live

    from login_etl.statuspage import StatusPage, render_rich, worker_counters

    source, dead = obj.checked_queues()
    if worker_url is None and obj.settings.http_port:
        worker_url = f"http://127.0.0.1:{obj.settings.http_port}"
    url = worker_url
    store = obj.store()
    page = StatusPage(source, dead, store, limit=limit, cache_seconds=0,
                      counters=(lambda: worker_counters(url)) if url else (lambda: None),
                      counters_scope=f"the worker at {url}" if url else "a worker (give --worker-url)")
    console = Console()
    try:
        if not watch:
            console.print(render_rich(page.snapshot(), console.width))
            return
        with Live(render_rich(page.snapshot(), console.width), console=console, auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                live.update(render_rich(page.snapshot(), console.width), refresh=True)
    except KeyboardInterrupt:
        # Ctrl-C is how --watch ends: the last view stays on screen and the exit is 0.
        pass
    finally:
        store.close()


@cli.command("init-db")
@pass_context
def init_db(obj: Context) -> None:
    """Create user_logins and the ledger's tables and day partitions if missing.

    An unpartitioned ledger of an earlier version is migrated; run does all this too.
    """
    store = obj.store()
    try:
        store.init_schema()
    finally:
        store.close()
    click.echo("schema ready")


@cli.command("clear-db")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_context
def clear_db(obj: Context, yes: bool) -> None:
    """Empty user_logins and the ledger."""
    if not yes:
        if not sys.stdin.isatty():
            fail("clear-db deletes every row; confirm with --yes when not at a terminal")
        click.confirm("Delete every row of user_logins and the ledger?", abort=True)
    store = obj.store()
    try:
        store.init_schema()
        removed = store.clear()
    finally:
        store.close()
    click.echo(f"removed {removed} rows")


@cli.command()
@click.option("--id", "key_id", metavar="ID",
              help="Print ID:KEY, an entry for LOGIN_ETL_MASKING_KEYS (1-16 of A-Z a-z 0-9 _ -).")
def keygen(key_id: str | None) -> None:
    """Print a fresh random 32-byte masking key (hex) for LOGIN_ETL_MASKING_KEY.

    The key is printed once and never logged; keep it in a secret store: without it no token
    can be reproduced (no joins with new data) and no siv token can be unmasked.
    """
    if key_id is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,16}", key_id):
        fail("--id must be 1-16 letters, digits, '-' or '_'")
    key = secrets.token_hex(32)
    click.echo(f"{key_id}:{key}" if key_id else key)


@cli.command()
@click.argument("tokens", nargs=-1, required=True, metavar="TOKEN...")
@click.option("--field", type=click.Choice(["ip", "device_id"]), required=True,
              help="The column the token came from (it is part of the encryption).")
@pass_context
def unmask(obj: Context, tokens: tuple[str, ...], field: str) -> None:
    """Recover the values of `siv` tokens, one per line ('-' reads tokens from stdin).

    Needs the key that wrote each token (LOGIN_ETL_MASKING_KEY or one of LOGIN_ETL_MASKING_KEYS).
    A one-way hmac token, a wrong key, a wrong --field or an altered token is refused: one line
    on stderr, exit 1, nothing printed.
    """
    try:
        masker = Masker(obj.settings.masking_keys or (obj.settings.writing_key,), "siv")
    except ConfigError as exc:
        fail(str(exc))
    wanted = [line for t in tokens for line in
              (sys.stdin.read().split() if t == "-" else [t])]
    values = []
    for position, token in enumerate(wanted, start=1):
        try:
            values.append(masker.unmask(token, field))
        except UnmaskError as exc:
            where = f"token {position}: " if len(wanted) > 1 else ""
            fail(f"{where}{exc}", EXIT_REFUSED)
    for value in values:
        click.echo(value)


cli.add_command(load)
cli.add_command(dlq)


def main() -> None:
    try:
        cli(standalone_mode=True)
    except ConfigError as exc:
        fail(str(exc))
    # A dependency failing after the start-up checks is one line too, not a traceback.
    except (StoreError, QueueError) as exc:
        fail(str(exc), EXIT_UNAVAILABLE)


if __name__ == "__main__":
    main()
