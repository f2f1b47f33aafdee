#!/usr/bin/env bash
# Ensure Debian's chromium is installed for the status-page browser tests (headless, no GPU).
# Idempotent; CI runs it as root on a fresh machine.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then echo "chromium: $(command -v chromium)"; exit 0; fi
if [ "$(id -u)" -ne 0 ]; then echo "chromium: not installed; run as root: apt-get install -y chromium" >&2; exit 1; fi
echo "chromium: installing Debian's chromium"
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q chromium >/dev/null 2>&1 \
  || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }
command -v chromium >/dev/null || { echo "chromium: install failed" >&2; exit 1; }
echo "chromium: ready ($(command -v chromium))"
