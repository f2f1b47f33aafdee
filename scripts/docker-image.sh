#!/usr/bin/env bash
# Build the login-etl image with a local dockerd and run it against the host's
# LocalStack (127.0.0.1:4566) and PostgreSQL (127.0.0.1:5432).
#
# No registry image can be pulled on these machines, so the base image is made
# here: Debian bookworm (Python 3.11) with debootstrap, then `docker import`.
# The Dockerfile's normal path (BASE_IMAGE=python:3.11-slim) is unchanged.
#
# Steps, each failing the script on error:
#   1. a dockerd (started from Debian's docker.io when none answers; stopped
#      again at the end if this script started it, unless KEEP_DOCKERD=1)
#   2. the base image (cached as a tarball under $CACHE)
#   (both from scripts/docker-lib.sh, shared with scripts/compose-test.sh)
#   3. docker build --build-arg BASE_IMAGE=<base>
#   4. fresh queues (config/localstack-init hook, run inside the image: it has
#      boto3) loaded with config/sample_data.json, and a fresh database
#      initialised with config/postgres-init.sql
#   5. `login-etl run --until-empty` in the container (read-only root fs,
#      non-root, --network host): 99 rows, 1 message in the DLQ, no raw ip
#   6. `login-etl run` detached: HEALTHCHECK turns healthy, /metrics answers,
#      `docker stop` (SIGTERM) ends it with exit code 0 within the grace period
#   7. prints the image size
#
# Environment: LOGIN_ETL_CACHE (default /root/.cache/login-etl), IMAGE (default
# login-etl:local), BASE_TAG, DEBIAN_MIRROR, KEEP_DOCKERD=1, KEEP_BASE=1.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
IMAGE=${IMAGE:-login-etl:local}
PG_HOST=127.0.0.1
PG_PORT=5432
SQS=http://127.0.0.1:4566
RUN_ID="smoke$$x$(date +%s)"
QUEUE=login-etl-$RUN_ID
DB=login_etl_$RUN_ID
export PGHOST=$PG_HOST PGPORT=$PG_PORT PGUSER=postgres
T0=$(date +%s)

log() { printf '[docker-image %3ss] %s\n' "$(($(date +%s) - T0))" "$*"; }
die() { log "FAIL: $*"; exit 1; }

# shellcheck source=scripts/docker-lib.sh
source "$ROOT/scripts/docker-lib.sh"
CONTAINERS=()

cleanup() {
    local rc=$?
    set +e
    for c in "${CONTAINERS[@]}"; do docker rm -f "$c" >/dev/null 2>&1; done
    if [[ -n "${QUEUES_MADE:-}" ]]; then
        docker run --rm --network host --entrypoint python3 \
            -e AWS_ACCESS_KEY_ID=test -e AWS_SECRET_ACCESS_KEY=test -e AWS_DEFAULT_REGION=us-east-1 \
            "$IMAGE" -c "import boto3; c = boto3.client('sqs', endpoint_url='$SQS')
for q in ('$QUEUE', '$QUEUE-dlq'):
    c.delete_queue(QueueUrl=c.get_queue_url(QueueName=q)['QueueUrl'])" >/dev/null 2>&1
    fi
    [[ -n "${DB_MADE:-}" ]] && dropdb --if-exists "$DB" >/dev/null 2>&1
    stop_started_dockerd
    exit $rc
}
trap cleanup EXIT

# ------------------------------------------------------------ 4. queues and DB
in_image_python() {
    docker run --rm --network host --entrypoint python3 \
        -e AWS_ACCESS_KEY_ID=test -e AWS_SECRET_ACCESS_KEY=test -e AWS_DEFAULT_REGION=us-east-1 \
        "$@"
}

prepare_backends() {
    curl -fsS "$SQS/_localstack/health" >/dev/null || die "LocalStack does not answer on $SQS"
    pg_isready -q || die "PostgreSQL does not answer on $PG_HOST:$PG_PORT"
    log "queues $QUEUE (+ -dlq) via config/localstack-init hook, sample loaded"
    QUEUES_MADE=1
    in_image_python \
        -e LOGIN_ETL_INIT_ENDPOINT="$SQS" -e LOGIN_ETL_INIT_QUEUE="$QUEUE" \
        -e LOGIN_ETL_SAMPLE_FILE=/sample/sample_data.json \
        -v "$ROOT/config/localstack-init:/init:ro" -v "$ROOT/config/sample_data.json:/sample/sample_data.json:ro" \
        "$IMAGE" /init/01-login-queue.py
    log "database $DB from config/postgres-init.sql"
    DB_MADE=1
    createdb "$DB"
    psql -q -v ON_ERROR_STOP=1 -d "$DB" -f "$ROOT/config/postgres-init.sql"
}

# ------------------------------------------------------------------- 5. + 6. run
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

set_run_args() {
    RUN_ARGS=(--network host --read-only --tmpfs /tmp
        -e AWS_ACCESS_KEY_ID=test -e AWS_SECRET_ACCESS_KEY=test -e AWS_DEFAULT_REGION=us-east-1
        -e "AWS_ENDPOINT_URL=$SQS"
        -e "LOGIN_ETL_QUEUE_URL=$SQS/000000000000/$QUEUE"
        -e "LOGIN_ETL_DLQ_URL=$SQS/000000000000/$QUEUE-dlq"
        -e "LOGIN_ETL_DATABASE_URL=postgresql://postgres@$PG_HOST:$PG_PORT/$DB"
        -e "LOGIN_ETL_MASKING_KEY=$KEY"
        -e "LOGIN_ETL_HTTP_PORT=$1")
}

sql() { psql -d "$DB" -tAc "$1"; }

run_until_empty() {
    KEY=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
    local port name t
    port=$(free_port)
    name=login-etl-$RUN_ID-once
    CONTAINERS+=("$name")
    log "docker run $IMAGE count"
    set_run_args "$port"
    docker run --rm "${RUN_ARGS[@]}" "$IMAGE" count
    log "docker run $IMAGE run --until-empty"
    t=$(date +%s)
    timeout 180 docker run --name "$name" "${RUN_ARGS[@]}" "$IMAGE" run --until-empty \
        >"$CACHE/docker-run.log" 2>&1 || { tail -30 "$CACHE/docker-run.log"; die "run --until-empty failed"; }
    log "run --until-empty finished in $(($(date +%s) - t)) s"
    local rows dlq raw
    rows=$(sql 'SELECT count(*) FROM user_logins')
    raw=$(sql "SELECT count(*) FROM user_logins WHERE masked_ip ~ '^[0-9]+[.][0-9]+[.][0-9]+[.][0-9]+$'")
    dlq=$(in_image_python "$IMAGE" -c "import boto3
c = boto3.client('sqs', endpoint_url='$SQS')
u = c.get_queue_url(QueueName='$QUEUE-dlq')['QueueUrl']
a = c.get_queue_attributes(QueueUrl=u, AttributeNames=['All'])['Attributes']
print(int(a['ApproximateNumberOfMessages']) + int(a['ApproximateNumberOfMessagesNotVisible']))")
    log "rows=$rows dlq=$dlq raw_ips=$raw"
    [[ "$rows" == 99 ]] || die "expected 99 rows, got $rows"
    [[ "$dlq" == 1 ]] || die "expected 1 message in the DLQ, got $dlq"
    [[ "$raw" == 0 ]] || die "$raw rows carry a raw IPv4 address"
}

run_daemon() {
    local port name status code t
    port=$(free_port)
    name=login-etl-$RUN_ID-daemon
    CONTAINERS+=("$name")
    log "docker run -d $IMAGE (daemon, HEALTHCHECK every 2 s)"
    set_run_args "$port"
    docker run -d --name "$name" --health-interval 2s --health-start-period 5s \
        "${RUN_ARGS[@]}" "$IMAGE" >/dev/null
    status=starting
    for _ in $(seq 1 60); do
        status=$(docker inspect -f '{{.State.Health.Status}}' "$name")
        [[ "$status" == healthy ]] && break
        [[ "$(docker inspect -f '{{.State.Running}}' "$name")" == true ]] || break
        sleep 1
    done
    [[ "$status" == healthy ]] || { docker logs --tail 30 "$name"; die "container not healthy: $status"; }
    curl -fsS "http://127.0.0.1:$port/metrics" >"$CACHE/docker-metrics.txt" \
        || die "/metrics does not answer"
    grep -q '^# TYPE login_etl_messages_total counter' "$CACHE/docker-metrics.txt" \
        || die "/metrics has no login_etl_messages_total"
    curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null || die "/readyz is not 200"
    log "healthy; /metrics answers; docker stop (SIGTERM, 30 s grace)"
    t=$(date +%s)
    docker stop -t 30 "$name" >/dev/null
    code=$(docker inspect -f '{{.State.ExitCode}}' "$name")
    log "stopped in $(($(date +%s) - t)) s, exit code $code"
    [[ "$code" == 0 ]] || { docker logs --tail 30 "$name"; die "exit code $code after SIGTERM"; }
}

ensure_dockerd
ensure_base
build_service_image "$IMAGE"
prepare_backends
run_until_empty
run_daemon

size=$(docker image inspect -f '{{.Size}}' "$IMAGE")
base_size=$(docker image inspect -f '{{.Size}}' "$BASE_TAG")
log "image $IMAGE: $((size / 1000000)) MB (base $BASE_TAG: $((base_size / 1000000)) MB)"
docker image ls "$IMAGE"
log "OK in $(($(date +%s) - T0)) s"
