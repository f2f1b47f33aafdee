#!/usr/bin/env bash
# Ensure PostgreSQL answers on 127.0.0.1:5432; start the machine's cluster if it is stopped.
set -euo pipefail
ready() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
if ready; then echo "postgres: running"; exit 0; fi
if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
  for version in $(ls /etc/postgresql); do
    echo "postgres: starting cluster $version/main"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  done
else
  echo "postgres: not installed; installing Debian's postgresql"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null
  for version in $(ls /etc/postgresql); do
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  done
fi
for _ in $(seq 1 60); do ready && { echo "postgres: ready"; exit 0; }; sleep 0.5; done
echo "postgres: not reachable on 127.0.0.1:5432" >&2
exit 1
