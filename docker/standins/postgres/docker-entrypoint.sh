#!/bin/bash
# The part of the official postgres image's docker-entrypoint.sh that
# docker-compose.yml relies on. First start (no PG_VERSION in $PGDATA): initdb
# with POSTGRES_PASSWORD, listen on all addresses with scram-sha-256 for remote
# hosts, run /docker-entrypoint-initdb.d/* against a socket-only server. Then the
# server is exec'd as PID 1.
set -Eeuo pipefail
shopt -s nullglob

if [ "${1:0:1}" = '-' ]; then
    set -- postgres "$@"
fi

# As root: own the data directory (a fresh volume is root's), then re-run as postgres.
if [ "$1" = postgres ] && [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA"
    chown postgres:postgres "$PGDATA"
    chmod 700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
fi

if [ "$1" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "${POSTGRES_HOST_AUTH_METHOD:-}" != trust ]; then
        echo "Error: POSTGRES_PASSWORD is not set (as in the official image, it is required)" >&2
        exit 1
    fi
    user=${POSTGRES_USER:-postgres}
    db=${POSTGRES_DB:-$user}
    # shellcheck disable=SC2086
    initdb --username="$user" --pwfile=<(printf '%s\n' "${POSTGRES_PASSWORD:-}") \
        ${POSTGRES_INITDB_ARGS:-}
    echo "listen_addresses = '*'" >> "$PGDATA/postgresql.conf"
    printf 'host all all all %s\n' "${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}" >> "$PGDATA/pg_hba.conf"

    pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start
    export PGUSER=$user PGPASSWORD=${POSTGRES_PASSWORD:-}
    if [ "$db" != postgres ]; then
        psql -v ON_ERROR_STOP=1 --dbname postgres -c "CREATE DATABASE \"$db\""
    fi
    for f in /docker-entrypoint-initdb.d/*; do
        # shellcheck disable=SC1090
        case "$f" in
            *.sh) echo "$0: running $f"; . "$f" ;;
            *.sql) echo "$0: running $f"; psql -v ON_ERROR_STOP=1 --dbname "$db" -f "$f" ;;
            *.sql.gz) echo "$0: running $f"; gunzip -c "$f" | psql -v ON_ERROR_STOP=1 --dbname "$db" ;;
            *) echo "$0: ignoring $f" ;;
        esac
    done
    unset PGPASSWORD
    pg_ctl -D "$PGDATA" -m fast -w stop
    echo "PostgreSQL init process complete; ready for start up."
fi

exec "$@"
