"""Each module logs under its own name, so a log line's source is the module that wrote it."""

from __future__ import annotations

import importlib
import pkgutil

import login_etl


def test_every_module_logger_is_named_after_its_module() -> None:
    named = {}
    for info in pkgutil.walk_packages(login_etl.__path__, "login_etl."):
        module = importlib.import_module(info.name)
        log = getattr(module, "log", None)
        if log is not None and hasattr(log, "_logger_factory_args"):
            named[info.name] = log._logger_factory_args
    assert {"login_etl.worker", "login_etl.roles", "login_etl.inflight"} <= set(named)
    assert {m: args for m, args in named.items() if args != (m,)} == {}
