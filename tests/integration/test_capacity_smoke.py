"""benchmarks/capacity.py and benchmarks/ledger.py complete on the real stack (PgBouncer
included) and report every figure; short runs, no timed assertion."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from tests.integration.stack import ROOT


def test_capacity_benchmark_reports_every_configuration(sqs: Any, postgres: str) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "capacity.py"), "--seconds", "0.5",
         "--messages", "300", "--json"],
        capture_output=True, text=True, timeout=280, stdin=subprocess.DEVNULL, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout[result.stdout.index("\n{") + 1:])
    runs = {(r["path"], r["writers"]) for r in figures["postgres"]}
    assert runs == {(p, w) for p in ("direct", "pgbouncer") for w in (1, 2, 4)}
    for r in figures["postgres"]:
        assert r["rows"] >= 500 * r["writers"] and r["us_per_row"] > 0, r
        assert r["wal_bytes_per_row"] > 0
    assert all(r["bouncer_us_per_row"] >= 0 for r in figures["postgres"])
    assert figures["worker"]["messages"] == 300 and figures["worker"]["per_cpu"] > 0
    assert 40 < figures["ledger_bytes_per_message"] < 400


def test_ledger_benchmark_reports_size_cpu_and_pruning(postgres: str) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "ledger.py"), "--rows", "5000",
         "--prune", "20000"],
        capture_output=True, text=True, timeout=280, stdin=subprocess.DEVNULL, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    for label in ("ledger bytes on disk per message", "Postgres CPU µs per stored row",
                  "prune 20,000 ids (s)"):
        assert any(line.startswith(label) for line in result.stdout.splitlines()), result.stdout
