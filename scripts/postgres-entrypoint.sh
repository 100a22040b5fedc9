#!/bin/sh
# The entrypoint of the `postgres:15` image that scripts/images builds from Debian's
# postgresql-15: the contract of the official image's entrypoint, in short.
#
# - `POSTGRES_PASSWORD` is required (the superuser's password), unless
#   `POSTGRES_HOST_AUTH_METHOD=trust`; `POSTGRES_USER` (default `postgres`) is the superuser;
#   `POSTGRES_DB` (default: the user's name) is created; `PGDATA` holds the cluster.
# - The first start makes the cluster; later starts with a cluster in PGDATA skip that.
# - `postgres` listens on every address, port 5432, clients from other hosts authenticate with
#   scram-sha-256 (or `POSTGRES_HOST_AUTH_METHOD`). Other commands run as given.
set -eu

if [ "${1#-}" != "$1" ]; then
    set -- postgres "$@"
fi
if [ "$1" != postgres ]; then
    exec "$@"
fi

PGDATA="${PGDATA:-/var/lib/postgresql/data}"
export PGDATA
if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chown -R postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

user="${POSTGRES_USER:-postgres}"
db="${POSTGRES_DB:-$user}"
auth="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "$auth" != trust ]; then
        echo "error: the database is not initialised and POSTGRES_PASSWORD is not set;" >&2
        echo "       set it (or POSTGRES_HOST_AUTH_METHOD=trust to allow all connections)" >&2
        exit 1
    fi
    pwfile="$(mktemp)"
    printf '%s\n' "${POSTGRES_PASSWORD:-}" >"$pwfile"
    initdb --username="$user" --pwfile="$pwfile" --auth-local=trust --auth-host="$auth" \
        --encoding=UTF8 --locale=C.UTF-8 >/dev/null
    rm -f "$pwfile"
    printf 'host all all all %s\n' "$auth" >>"$PGDATA/pg_hba.conf"
    # A server on the socket alone while the database is made: no client sees it half-ready.
    pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
    if [ "$db" != postgres ]; then
        psql -v ON_ERROR_STOP=1 --username="$user" --dbname=postgres -q \
            -c "CREATE DATABASE \"$db\"" >/dev/null
    fi
    pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
    echo "PostgreSQL init process complete; ready for start up."
fi
shift
exec postgres -c listen_addresses='*' "$@"
