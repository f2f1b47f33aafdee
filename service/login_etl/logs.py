"""structlog setup, once: JSON lines for machines, console for a person at a terminal.

Events carry counts, timings and message ids; never a body, an ip or a device_id.
"""

from __future__ import annotations

import logging
import sys
from typing import Any


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


structlog = _import_structlog()

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


def configure(log_format: str = "json", level: str = "info") -> None:
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
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


def get(name: str) -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger(name)
