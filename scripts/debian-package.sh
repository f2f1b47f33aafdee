#!/usr/bin/env bash
# Ensure a Debian package whose program the tests run is installed:
#   scripts/debian-package.sh PROGRAM PACKAGE...
# pgbouncer (the tests start their own instances on free ports; its system service is left
# alone), faketime (a replica whose clock is days off) and chromium (the status-page browser
# tests). Idempotent; CI runs it as root on a fresh machine.
set -euo pipefail
program=$1; shift
found() { command -v "$program" >/dev/null 2>&1 || [ -x "/usr/sbin/$program" ]; }
if found; then echo "$program: installed"; exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "$program: not installed; run as root: apt-get install -y $*" >&2; exit 1
fi
echo "$program: installing Debian's $*"
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q "$@" >/dev/null 2>&1 \
  || { apt-get update -q >/dev/null && apt-get install -y -q "$@" >/dev/null; }
found || { echo "$program: installation failed" >&2; exit 1; }
echo "$program: installed"
