#!/bin/bash
# The PostgreSQL entrypoint of both image sets (the offline image bakes it in;
# for the official image voyager-sim copies it into the container). It takes
# the official image's interface (POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB,
# PGDATA, `postgres -c ...` arguments) plus the replication roles:
#   VOYAGER_PG_ROLE      primary | standby | replica
#   VOYAGER_PG_PRIMARY   the primary's address (standby and replica)
#   VOYAGER_PG_NAME      this node's name in replication (application_name)
#   VOYAGER_PG_SYNC      synchronous_standby_names for a new primary
#   POSTGRES_REPLICATION_PASSWORD  password of the `replicator` role
#   VOYAGER_PG_RESTORE_TARGET  (role `restore`) the time to restore to from
#                        the pgBackRest repository its PGBACKREST_* name
set -euo pipefail

if [ "${1:-postgres}" != "postgres" ]; then exec "$@"; fi
shift || true

: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
: "${VOYAGER_PG_ROLE:=primary}"
: "${VOYAGER_PG_NAME:=postgres}"
if [ -z "${POSTGRES_PASSWORD:-}" ]; then
  echo "voyager-entrypoint: POSTGRES_PASSWORD must be set" >&2
  exit 1
fi

sql_literal() { printf "'%s'" "${1//\'/\'\'}"; }

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ "$VOYAGER_PG_ROLE" = primary ]; then
    pwfile=$(mktemp)
    printf '%s' "$POSTGRES_PASSWORD" > "$pwfile"
    initdb --username="$POSTGRES_USER" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 \
      --encoding=UTF8 --locale=C.UTF-8 -D "$PGDATA" >/dev/null
    rm -f "$pwfile"
    echo "host all all 0.0.0.0/0 scram-sha-256" >> "$PGDATA/pg_hba.conf"
    echo "host replication replicator 0.0.0.0/0 scram-sha-256" >> "$PGDATA/pg_hba.conf"
    # Single-user mode: no listener is open until these exist, so a client
    # that connects is never early.
    {
      if [ "$POSTGRES_DB" != "postgres" ]; then
        echo "CREATE DATABASE \"$POSTGRES_DB\" OWNER \"$POSTGRES_USER\";"
      fi
      if [ -n "${POSTGRES_REPLICATION_PASSWORD:-}" ]; then
        echo "CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD $(sql_literal "$POSTGRES_REPLICATION_PASSWORD");"
      fi
    } | postgres --single -D "$PGDATA" postgres >/dev/null
    # ALTER SYSTEM's file, not a command-line flag: failover changes it at
    # run time, and flags would win over it.
    echo "synchronous_standby_names = $(sql_literal "${VOYAGER_PG_SYNC:-}")" >> "$PGDATA/postgresql.auto.conf"
  elif [ "$VOYAGER_PG_ROLE" = restore ]; then
    : "${VOYAGER_PG_RESTORE_TARGET:?a restore needs VOYAGER_PG_RESTORE_TARGET}"
    # pgBackRest picks the newest backup that ended before the target and
    # writes the restore_command that replays archived WAL up to it; the
    # server promotes itself there.
    echo "voyager-entrypoint: restoring to $VOYAGER_PG_RESTORE_TARGET"
    pgbackrest --type=time --target="$VOYAGER_PG_RESTORE_TARGET" --target-action=promote restore
    chmod 700 "$PGDATA"
  else
    : "${VOYAGER_PG_PRIMARY:?a $VOYAGER_PG_ROLE needs VOYAGER_PG_PRIMARY}"
    echo "voyager-entrypoint: waiting for the primary $VOYAGER_PG_PRIMARY"
    for _ in $(seq 1 600); do
      pg_isready -q -h "$VOYAGER_PG_PRIMARY" -p 5432 && break
      sleep 0.2
    done
    # A base backup streams for seconds while the primary is still starting
    # (and, on a loaded machine, a stalled stream trips wal_sender_timeout):
    # a failed attempt leaves an empty directory and is simply tried again.
    for attempt in 1 2 3 4 5 6 7 8; do
      echo "voyager-entrypoint: base backup from $VOYAGER_PG_PRIMARY (attempt $attempt)"
      if PGPASSWORD="$POSTGRES_REPLICATION_PASSWORD" pg_basebackup -h "$VOYAGER_PG_PRIMARY" -p 5432 -U replicator \
        -D "$PGDATA" -X stream -R -c fast; then
        break
      fi
      if [ "$attempt" = 8 ]; then
        echo "voyager-entrypoint: no base backup after $attempt attempts" >&2
        exit 1
      fi
      rm -rf "${PGDATA:?}"/* 2>/dev/null || true
      sleep "$attempt"
    done
    chmod 700 "$PGDATA"
    # Only here, at the first start: afterwards the data directory says what
    # the node is (a promoted standby has no standby.signal, a repointed
    # replica has its new primary_conninfo), so a restart keeps its role.
    conninfo="host=$VOYAGER_PG_PRIMARY port=5432 user=replicator password=$POSTGRES_REPLICATION_PASSWORD application_name=$VOYAGER_PG_NAME"
    echo "primary_conninfo = $(sql_literal "$conninfo")" >> "$PGDATA/postgresql.auto.conf"
  fi
fi

exec postgres -D "$PGDATA" -c listen_addresses='*' -c cluster_name="$VOYAGER_PG_NAME" "$@"
