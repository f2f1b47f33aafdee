import os
import pathlib
import sys
from typing import Any

import pytest
import structlog
from hypothesis import settings

# The tests import the package from service/ even without an editable install.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "service"))

# scripts/mutate.py runs the unit tests once per mutant: the same examples every run (a score
# must not depend on luck) and no deadline (a mutant may be slow without being wrong).
settings.register_profile("mutate", derandomize=True, deadline=None, database=None)
# Otherwise no deadline either: a property test checks what comes out, not how fast; on a
# busy 2-core machine a 200 ms deadline failed examples that were right (473 ms seen).
settings.register_profile("suite", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "suite"))


@pytest.fixture(autouse=True)
def _loggers_never_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    """structlog caches a logger with the processors of its first use; a later configure()
    (every in-process CLI test calls one) would then leave it out of capture_logs, so a test
    would pass or fail by the order it runs in (and mutmut runs tests in its own order)."""
    real = structlog.configure

    def configure(**settings: Any) -> None:
        real(**{**settings, "cache_logger_on_first_use": False})

    monkeypatch.setattr(structlog, "configure", configure)
