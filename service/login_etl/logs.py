"""structlog setup, once: JSON lines for machines, console for a person at a terminal.

Events carry counts, timings and message ids; never a body, an ip or a device_id. A string
that came from outside (an SQS error code, a server's reason, a row's value) passes through
printable() before a log line, the status page or the terminal shows it.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from structlog.typing import EventDict, FilteringBoundLogger, Processor


def _import_structlog() -> Any:
    """structlog without rich: structlog.dev imports rich at its own import when rich is
    installed (for console tracebacks), a sixth of the worker's start-up imports. Tracebacks are
    rendered to plain text by format_exc_info before any renderer sees them, so rich would
    never draw one here; `login-etl watch` imports rich when it draws."""
    if "rich" in sys.modules:
        import structlog

        return structlog
    # None in sys.modules makes `import rich` raise ImportError, which structlog.dev expects.
    sys.modules["rich"] = None  # type: ignore[assignment]
    try:
        import structlog
    finally:
        del sys.modules["rich"]
    return structlog


if TYPE_CHECKING:
    import structlog
else:
    structlog = _import_structlog()

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


# Past this, a string from outside is cut (its length bounded in every view).
PRINTABLE_LIMIT = 256


def printable(value: object, limit: int | None = PRINTABLE_LIMIT) -> str:
    """The text with every character a terminal or a page would not show as itself escaped:
    C0 and C1 controls (ESC, so no `ESC[2J` clears a screen), format characters such as the
    bidi overrides (U+202E), line and paragraph separators, unassigned and private-use code
    points and lone surrogates, each as `\\uNNNN` or `\\UNNNNNNNN`; then cut to
    `limit` characters, an ellipsis marking the cut."""
    text = value if isinstance(value, str) else str(value)
    if not text.isprintable():
        text = "".join(c if c.isprintable() else _escape(c) for c in text)
    if limit is not None and len(text) > limit:
        text = text[:limit - 1] + "…"
    return text


def _escape(c: str) -> str:
    code = ord(c)
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _printable_values(_logger: Any, _name: str, event: EventDict) -> EventDict:
    """For the console renderer, which writes strings as they are (JSON lines escape them)."""
    return {k: printable(v, None) if isinstance(v, str) else v for k, v in event.items()}


def configure(log_format: str = "json", level: str = "info") -> None:
    renderer: Processor = (
        structlog.processors.JSONRenderer() if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    console: list[Processor] = [] if log_format == "json" else [_printable_values]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            *console,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # Libraries log through stdlib logging: render them as the same one-line events. The pool's
    # own reconnect chatter is left out; the worker reports outages once, as events of its own.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        foreign_pre_chain=[structlog.processors.add_log_level,
                           structlog.processors.TimeStamper(fmt="iso", utc=True)],
    ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)


def get(name: str) -> FilteringBoundLogger:
    # get_logger's type is Any (the wrapper class is configurable); configure() makes it this.
    logger: FilteringBoundLogger = structlog.get_logger(name)
    return logger
