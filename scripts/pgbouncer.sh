#!/usr/bin/env bash
# Ensure Debian's pgbouncer binary is installed (the tests start their own instances of it,
# as the postgres user, on free ports); its system service is left alone.
set -euo pipefail
if command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ]; then
  echo "pgbouncer: installed"; exit 0
fi
echo "pgbouncer: installing Debian's package"
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q pgbouncer >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q pgbouncer >/dev/null; }
[ -x /usr/sbin/pgbouncer ] || { echo "pgbouncer: installation failed" >&2; exit 1; }
echo "pgbouncer: installed"
