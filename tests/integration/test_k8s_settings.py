"""The settings deploy/k8s ships (its ConfigMap: 8 pollers over a pool of 4 connections, sized
so that KEDA's maximum fits PostgreSQL's default connection limit) move a load correctly."""

from __future__ import annotations

import time

import pytest
import yaml

from tests.integration.stack import ROOT, Stack, unique_bodies

pytestmark = pytest.mark.integration


def configmap_settings() -> dict[str, str]:
    data = yaml.safe_load((ROOT / "deploy" / "k8s" / "configmap.yaml").read_text())["data"]
    # The queue, region and port are the cluster's; the rest is what every replica runs with.
    return {k: v for k, v in data.items()
            if k.startswith("LOGIN_ETL_") and k not in {"LOGIN_ETL_QUEUE_URL", "LOGIN_ETL_DLQ_URL",
                                                        "LOGIN_ETL_HTTP_PORT"}}


def test_the_configmaps_pool_and_pollers_store_a_load_once(stack: Stack) -> None:
    settings = configmap_settings()
    assert int(settings["LOGIN_ETL_DB_POOL_SIZE"]) < int(settings["LOGIN_ETL_POLLERS"])
    stack.send(unique_bodies(3000, prefix="k8s"))
    started = time.monotonic()
    stack.cli("run", "--until-empty", env=stack.env(**settings), timeout=240)
    print(f"3,000 messages with {settings}: {time.monotonic() - started:.1f} s")
    assert stack.count_rows() == 3000
    assert stack.duplicate_rows() == 0
    assert stack.depth()["visible"] == 0
