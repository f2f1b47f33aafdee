"""Which protocol versions of the worker share the database, so that a rolling upgrade is safe
by construction: what an older replica would not understand waits while one is seen.

Each replica registers with a heartbeat (at start and at every housekeeping run) and the
protocol version it speaks. Releases from before the registry do not register: they are seen
by their connections' application_name, which carried no version then. The schema records the
protocols that have run against it. A replica seeing a newer one leaves housekeeping to it
while it is seen (after a rollback, the older release takes housekeeping up again).
"""

from __future__ import annotations

import os
import socket
from typing import Any

import psycopg

from login_etl.ledger.days import TABLE

# The ledger protocol this release speaks. 1: day partitions and packed ids (no registry);
# 2: the database's day, redriven copies' day-less ids, step-wise packing, this registry.
PROTOCOL = 2
# application_name of this release's connections, and of releases before the registry.
APPLICATION_NAME = f"login-etl/{PROTOCOL}"
UNVERSIONED_NAME = "login-etl"
REPLICAS = f"{TABLE}_replicas"
VERSION = f"{TABLE}_version"
# A replica is seen while its heartbeat is younger than two housekeeping runs (hourly).
SEEN_FOR = "2 hours 15 minutes"

DDL = f"""
CREATE TABLE IF NOT EXISTS {REPLICAS}(
  name text PRIMARY KEY,
  version integer NOT NULL,
  seen timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS {VERSION}(
  version integer PRIMARY KEY,
  since timestamptz NOT NULL DEFAULT now()
);
"""


def name() -> str:
    """This replica: its host (the pod's name under Kubernetes) and process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def heartbeat(conn: psycopg.Connection[Any]) -> None:
    """Register this replica as seen now, and the schema as having met this version."""
    conn.execute(f"INSERT INTO {REPLICAS} (name, version) VALUES (%s, %s) ON CONFLICT (name)"
                 " DO UPDATE SET version = excluded.version, seen = now()", (name(), PROTOCOL))
    conn.execute(f"INSERT INTO {VERSION} (version) VALUES (%s) ON CONFLICT DO NOTHING",
                 (PROTOCOL,))
    conn.execute(f"DELETE FROM {REPLICAS} WHERE seen < now() - interval '1 day'")


def seen(conn: psycopg.Connection[Any]) -> tuple[int, int]:
    """The oldest and the newest protocol among the replicas seen now: 1 for a connection of a
    release from before the registry (its application_name carries no version)."""
    row = conn.execute(
        f"SELECT least(min(version), (SELECT 1 FROM pg_stat_activity"
        " WHERE datname = current_database() AND application_name = %s LIMIT 1)),"
        f" max(version) FROM {REPLICAS} WHERE seen > now() - interval '{SEEN_FOR}'",
        (UNVERSIONED_NAME,)).fetchone()
    if not row:
        return PROTOCOL, PROTOCOL
    return (int(row[0]) if row[0] is not None else PROTOCOL,
            int(row[1]) if row[1] is not None else PROTOCOL)


def schema_version(conn: psycopg.Connection[Any]) -> int:
    """The highest protocol that has run against this schema (a later release reads it to know
    what it migrates from)."""
    row = conn.execute(f"SELECT max(version) FROM {VERSION}").fetchone()
    return int(row[0]) if row and row[0] is not None else 0
