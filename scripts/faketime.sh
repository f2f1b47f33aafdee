#!/usr/bin/env bash
# Ensure Debian's faketime (libfaketime's wrapper): the ledger tests run a replica whose clock
# is days off with it.
set -euo pipefail
if command -v faketime >/dev/null; then
  echo "faketime: installed"; exit 0
fi
echo "faketime: installing Debian's package"
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q faketime >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q faketime >/dev/null; }
command -v faketime >/dev/null || { echo "faketime: installation failed" >&2; exit 1; }
echo "faketime: installed"
