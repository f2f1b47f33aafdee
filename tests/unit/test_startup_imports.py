"""What `login-etl run` imports at start: every module is CPU paid by each process start."""

from __future__ import annotations

import json
import subprocess
import sys

RUN_IMPORTS = ("import login_etl.cli, login_etl.worker, login_etl.http, login_etl.logs, sys; "
               "login_etl.logs.configure('console'); login_etl.logs.configure('json'); "
               "import json; print(json.dumps(sorted(m for m in {} if m in sys.modules)))")


def _imported(modules: tuple[str, ...]) -> list[str]:
    code = RUN_IMPORTS.format(repr(modules))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_the_worker_start_does_not_import_rich() -> None:
    # structlog.dev pulls rich in when it is installed; the worker never draws with it.
    assert _imported(("rich", "rich.console", "rich.traceback", "rich.pretty")) == []


def test_rich_still_works_for_the_terminal_view_after_logs() -> None:
    code = ("import login_etl.logs, io; from rich.console import Console; "
            "c = Console(file=io.StringIO()); c.print('ok'); print(c.file.getvalue().strip())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"
