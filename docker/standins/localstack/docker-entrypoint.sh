#!/bin/bash
# The official image's bin/docker-entrypoint.sh, less its Pro-image warnings.
set -eo pipefail
shopt -s nullglob

# LOCALSTACK_<NAME> settings are also read as <NAME> (not LOCALSTACK_HOST/HOSTNAME).
# shellcheck disable=SC1090,SC2016
source <(
  env |
  grep -v -e '^LOCALSTACK_HOSTNAME' |
  grep -v -e '^LOCALSTACK_HOST' |
  grep -v -e '^LOCALSTACK_[[:digit:]]' |
  sed -ne 's/^LOCALSTACK_\([^=]\+\)=.*/export \1=${LOCALSTACK_\1}/p'
)

LOG_DIR=/var/lib/localstack/logs
test -d ${LOG_DIR} || mkdir -p ${LOG_DIR}

# shellcheck disable=SC1091
source /opt/code/localstack/.venv/bin/activate

# BOOT hooks run before LocalStack starts; READY hooks are run by LocalStack itself.
test -d /etc/localstack/init/boot.d && python3 -m localstack.runtime.init BOOT

# exec, no pipe: the supervisor is PID 1 and gets SIGTERM itself.
exec localstack-supervisor
