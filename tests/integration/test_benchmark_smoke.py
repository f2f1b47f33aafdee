"""benchmarks/run.py --quick completes on the real stack and prints every figure.

Only that it runs and reports: the targets are timings on a shared machine, and a timed
assertion does not belong in a test.
"""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

from tests.integration.stack import ROOT

FIGURES = (
    "raw ceiling",
    "seed-style worker",
    "login-etl run --until-empty",
    "lean loop",
    "login-etl / ceiling (c/a)",
    "login-etl / lean loop, end to end",
    "login-etl / seed-style (c/b)",
    "bare loop: messages per CPU-second",
    "login-etl: messages per CPU-second",
    "login-etl / bare loop, messages per CPU-s",
    "DB stage",
    "login-etl peak RSS",
    "latency SentTimestamp->commit p50",
    "latency SentTimestamp->commit p99",
)


def test_quick_benchmark_prints_every_figure(sqs: Any, postgres: str) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick"],
        capture_output=True, text=True, timeout=280, stdin=subprocess.DEVNULL, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    for figure in FIGURES:
        line = next((ln for ln in lines if ln.startswith(figure)), None)
        assert line is not None, f"no line for {figure!r} in:\n{result.stdout}"
        assert re.search(r"\s\s[\d,.]+(x| msg/s| rows/s| MB| ms)?(\s|$)", line), \
            f"no value for {figure!r}: {line}"
    targets = [ln for ln in lines if re.search(r"\b(PASS|FAIL)$", ln)]
    # Lean loop end to end, CPU per message, DB stage, RSS, p99 latency; the seed-style ratio
    # is information only (it measures LocalStack here).
    assert len(targets) == 5, "every target is reported with PASS or FAIL"
    assert re.search(r"1: ceiling .*\n.*1: lean loop .*\n.*1: login-etl .*\n"
                     r".*2: ceiling .*\n.*2: lean loop .*\n.*2: login-etl", result.stdout), \
        "ceiling, lean loop and login-etl rounds alternate"
