#!/usr/bin/env bash
# Ensure LocalStack (SQS, SNS and EventBridge, no Docker) answers on 127.0.0.1:4566: install it into its own
# cached venv on first use (it pins its own boto3 and needs Python >= 3.13), start it if not
# running, wait until SQS is ready. Idempotent; safe to call from CI on a fresh machine.
set -euo pipefail
CACHE=${LOGIN_ETL_CACHE:-/root/.cache/login-etl}
VENV=$CACHE/localstack-venv
PORT=${LOCALSTACK_PORT:-4566}
LOG=$CACHE/localstack.log
VERSION=2026.3.0

SERVICES=sqs,sns,events
# Ready when every service the tests use answers; an older LocalStack of ours with SQS alone
# is stopped (by its pid) and started again with the full list.
health() {
  local answer
  answer=$(curl -fsS "http://127.0.0.1:$PORT/_localstack/health" 2>/dev/null) || return 1
  for service in ${SERVICES//,/ }; do
    grep -q "\"$service\": \"\(running\|available\)\"" <<<"$answer" || return 1
  done
}

if health; then echo "localstack: already running on $PORT"; exit 0; fi
if [ -f "$CACHE/localstack.pid" ] && kill -0 "$(cat "$CACHE/localstack.pid")" 2>/dev/null; then
  echo "localstack: restarting ours without $SERVICES"
  kill "$(cat "$CACHE/localstack.pid")"; sleep 3
fi

mkdir -p "$CACHE"
if ! "$VENV/bin/python" -c "import localstack" 2>/dev/null; then
  # A pyenv shim for an installed but not selected version exists and fails when run, so
  # each candidate is tried by running it, real interpreters first.
  PY=""
  for candidate in /root/.pyenv/versions/3.1[3-9]*/bin/python3 "$(pyenv root 2>/dev/null)"/versions/3.1[3-9]*/bin/python3 \
                   python3.13 python3.14 python3; do
    if "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 13))' 2>/dev/null; then
      PY=$(command -v "$candidate"); break
    fi
  done
  [ -n "$PY" ] || { echo "localstack: needs Python >= 3.13 (pyenv install 3.13)" >&2; exit 1; }
  echo "localstack: installing localstack-core $VERSION into $VENV (python: $PY)"
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip 2>&1 | grep -v '^WARNING' || true
  "$VENV/bin/pip" install -q "localstack-core[runtime]==$VERSION" 'cbor2<6' 'pyopenssl<25' 2>&1 | grep -v '^WARNING' || true
  "$VENV/bin/python" -c "import localstack" || { echo "localstack: install failed" >&2; exit 1; }
fi

echo "localstack: starting on 127.0.0.1:$PORT (log: $LOG)"
cd "$CACHE"
SERVICES=$SERVICES EAGER_SERVICE_LOADING=1 GATEWAY_LISTEN=127.0.0.1:$PORT DNS_ADDRESS=0 DISABLE_EVENTS=1 \
  SKIP_SSL_CERT_DOWNLOAD=1 SQS_DISABLE_CLOUDWATCH_METRICS=1 GATEWAY_SERVER=hypercorn \
  LOCALSTACK_VOLUME_DIR="$CACHE/localstack-volume" \
  nohup "$VENV/bin/python" -m localstack.runtime.main >"$LOG" 2>&1 </dev/null &
echo $! >"$CACHE/localstack.pid"
for _ in $(seq 1 120); do
  if health; then echo "localstack: ready"; exit 0; fi
  sleep 0.5
done
echo "localstack: did not become ready in 60 s; last log lines:" >&2
tail -20 "$LOG" >&2
exit 1
