#!/bin/sh
# Run by pgctl as root in a throwaway container whose data volume is mounted at
# /var/lib/postgresql/data. PostgreSQL itself does the recovery; this script only sequences it.
#   recover.sh verify  BINDIR FETCH...  fetch a backup, recover, promote, pg_dumpall + amcheck
#   recover.sh restore BINDIR FETCH...  fetch a backup, recover to the target, promote, stop
#   recover.sh prefetch BINDIR FETCH... a restore's replica: fetch a backup into pgctl-prefetch
#                                      beside the data directory (moved into place later by
#                                      Patroni's replica method), no recovery
#   recover.sh bump    BINDIR RESTORE_COMMAND
#                                      existing data: promote it onto a new timeline (rollback)
# FETCH is the backup engine's restore command. RECOVERY_CONF (env), when set, holds recovery
# settings to append to postgresql.auto.conf after the fetch (engines that write none).
# Progress goes to stderr as "pgctl: ..." lines, the result as one "pgctl: summary JSON" line.
# A restore and a prefetch then wait for pgctl's answer, given with `docker exec` into this
# container (see await_pgctl): pgctl marks a restored volume complete once it has read the
# summary, and hands a replica's copy the restored timeline's history.
set -eu
MODE=$1
BINDIR=$2
shift 2
DATA=/var/lib/postgresql/data
PGDATA=$DATA/pgdata
LOG=/tmp/postgresql.log

# printf, not echo: dash's echo would turn the summary's JSON escapes (\t, \n) into control characters.
say() { printf 'pgctl: %s\n' "$*" >&2; }
as_pg() { setpriv --reuid=postgres --regid=postgres --init-groups env HOME=/var/lib/postgresql PGHOST=/tmp PGUSER=postgres PGDATABASE=postgres "$@"; }
sql() { as_pg "$BINDIR/psql" -XAtq -v ON_ERROR_STOP=1 "$@"; }
# Waits at most $1 seconds for pgctl's answer, tested by the rest of the arguments.
await_pgctl() {
  tries=$(($1 * 10))
  shift
  until "$@"; do
    tries=$((tries - 1))
    [ "$tries" -gt 0 ] || return 1
    sleep 0.1
  done
}

chown postgres:postgres "$DATA"
chmod 0700 "$DATA"

case $MODE in
verify | restore)
  if [ -e "$PGDATA" ]; then
    say "the volume already holds a data directory: refusing to overwrite it"
    exit 3
  fi
  # Marks the volume as a restore in progress; pgctl removes the mark once it has seen the
  # recovery succeed (see INCOMPLETE_MARKER), so a run whose pgctl died never counts as done.
  [ "$MODE" = restore ] && touch "$DATA/pgctl-restore-incomplete"
  install -d -o postgres -g postgres -m 0700 "$PGDATA"
  say "phase fetch"
  as_pg "$@" >&2
  if [ -n "${RECOVERY_CONF:-}" ]; then
    printf '%s\n' "$RECOVERY_CONF" | as_pg tee -a "$PGDATA/postgresql.auto.conf" >/dev/null
    as_pg touch "$PGDATA/recovery.signal"
  fi
  ;;
prefetch)
  if [ -e "$PGDATA" ] || [ -e "$DATA/pgctl-prefetch" ]; then
    say "the volume already holds a data directory: refusing to overwrite it"
    exit 3
  fi
  # Marks the copy as being fetched until it is complete and out of Patroni's sight: a run
  # whose pgctl died leaves a volume that `up` refuses and a retried restore discards.
  touch "$DATA/pgctl-prefetch-incomplete"
  install -d -o postgres -g postgres -m 0700 "$PGDATA"
  say "phase fetch"
  # A failed fetch leaves no partial data directory that anything could start.
  if ! as_pg "$@" >&2; then
    rm -rf "$PGDATA" "$DATA/pgctl-prefetch-incomplete"
    say "the fetch failed"
    exit 4
  fi
  # The restored timeline's history, which pgctl delivers (into pgctl-prefetch-history) once
  # the leader's recovery has promoted, usually while this fetch runs: with it in pg_wal the
  # copy replays the restored timeline, never the abandoned one, and only then is the request
  # that Patroni's replica method take the copy (COPY_REQUEST, its lines) left beside it.
  # Without the history in time, pgctl adds both later itself.
  taken=false
  [ -d "$DATA/pgctl-prefetch-history" ] || say "phase await"
  if await_pgctl "${ANSWER_WITHIN:-60}" test -d "$DATA/pgctl-prefetch-history"; then
    for f in "$DATA"/pgctl-prefetch-history/*.history; do
      if [ -e "$f" ]; then mv "$f" "$PGDATA/pg_wal/"; fi
    done
    rmdir "$DATA/pgctl-prefetch-history"
    taken=true
  fi
  # Out of Patroni's sight until its replica method takes it: a data directory there would make
  # Patroni start it as it is instead of creating a replica.
  mv "$PGDATA" "$DATA/pgctl-prefetch"
  if [ "$taken" = true ]; then
    rm -f "$DATA/pgctl-replica-result"
    printf '%s\n' "$COPY_REQUEST" | as_pg tee "$DATA/pgctl-replica-request" >/dev/null
  fi
  rm "$DATA/pgctl-prefetch-incomplete"
  say "summary {\"taken\": $taken}"
  exit 0
  ;;
bump)
  if [ ! -f "$PGDATA/PG_VERSION" ]; then
    say "the volume holds no data directory"
    exit 3
  fi
  RESTORE_COMMAND=$1
  as_pg touch "$PGDATA/standby.signal"
  ;;
*)
  say "unknown mode $MODE"
  exit 2
  ;;
esac

# Only a unix socket in /tmp (never the host's port: Patroni may run beside us), peer
# authentication for postgres, no replication source, and no synchronous standby to wait for.
printf 'local all postgres peer\n' >/tmp/pgctl-hba.conf
chown postgres /tmp/pgctl-hba.conf
set -- -D "$PGDATA" -c listen_addresses= -c unix_socket_directories=/tmp -c hba_file=/tmp/pgctl-hba.conf \
  -c synchronous_standby_names= -c primary_conninfo= -c primary_slot_name= -c hot_standby=on \
  -c logging_collector=off -c cluster_name="pgctl-$MODE"
case $MODE in
# A verification never archives anything (and its S3 key is read-only besides).
verify) set -- "$@" -c archive_mode=off ;;
# An empty archive_command with archive_mode on: nothing is archived from here, and the WAL and
# timeline history written here stay marked ready for the cluster's own archiver (read-write
# key) once Patroni runs this data directory.
restore) set -- "$@" -c archive_mode=on -c archive_command= ;;
bump) set -- "$@" -c archive_mode=on -c archive_command= -c restore_command="$RESTORE_COMMAND" \
  -c recovery_target_timeline=current ;;
esac
say "phase replay"
as_pg "$BINDIR/postgres" "$@" >"$LOG" 2>&1 &
PID=$!

i=0
while :; do
  if ! kill -0 "$PID" 2>/dev/null; then
    say "PostgreSQL stopped during recovery; the end of its log:"
    tail -n 25 "$LOG" | sed 's/^/  /' >&2
    exit 4
  fi
  state=$(sql -c "SELECT pg_is_in_recovery(), coalesce(pg_last_wal_replay_lsn()::text, '-'), coalesce(to_char(pg_last_xact_replay_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || ' UTC', '-')" 2>/dev/null || echo starting)
  case $state in
  f\|*) break ;;
  t\|*)
    if [ "$MODE" = bump ]; then
      as_pg "$BINDIR/pg_ctl" -D "$PGDATA" promote -w -t 120 >/dev/null
      continue
    fi
    lsn=$(echo "$state" | cut -d'|' -f2)
    ts=$(echo "$state" | cut -d'|' -f3)
    [ $((i % 30)) = 0 ] && say "replaying WAL: at $lsn, last transaction replayed $ts"
    ;;
  *) [ $((i % 50)) = 0 ] && say "PostgreSQL is starting: restoring WAL up to a consistent state" ;;
  esac
  i=$((i + 1))
  # Looked at often: the end of the replay is the start of the cluster's new life (a restore's
  # downtime), and a short replay is over in well under a second.
  sleep 0.2
done
say "promoted"

# Recovery settings the fetch wrote must not follow this data directory into the cluster (a
# replica cloned with a recovery target would stop at it).
for p in restore_command recovery_target recovery_target_time recovery_target_lsn recovery_target_name \
  recovery_target_xid recovery_target_action recovery_target_timeline recovery_target_inclusive archive_mode; do
  echo "ALTER SYSTEM RESET $p;"
done | sql >/dev/null
if [ "$MODE" = restore ] && [ -f /etc/pgctl/cluster-roles.sql ]; then
  sql -f /etc/pgctl/cluster-roles.sql >/dev/null
  say "the cluster's superuser, replication and rewind roles match secrets.toml"
fi
sql -c "CHECKPOINT"

indexes=0
if [ "$MODE" = verify ]; then
  say "phase dump"
  if ! as_pg "$BINDIR/pg_dumpall" >/dev/null; then
    say "pg_dumpall FAILED: not every row of the backup can be read"
    exit 5
  fi
  say "phase amcheck"
  sql -c "SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1" >/tmp/databases
  while read -r db; do
    # heapallindexed: every heap tuple must have its index entry, not only a sane B-tree.
    # (Captured whole, never through a pipe: a failing check must fail the verification.)
    if ! checked=$(sql -d "$db" -c "CREATE EXTENSION IF NOT EXISTS amcheck" -c "SELECT c.relname, bt_index_check(c.oid, true) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam WHERE a.amname = 'btree' AND c.relpersistence <> 't' AND i.indisvalid AND i.indisready"); then
      say "amcheck FAILED in database $db: an index does not match its table"
      exit 5
    fi
    n=$(printf '%s\n' "$checked" | grep -c .)
    say "amcheck: $db: $n B-tree indexes intact"
    indexes=$((indexes + n))
  done </tmp/databases
fi

summary=$(sql -c "SELECT json_build_object('timeline', ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int, 'system_id', (SELECT system_identifier::text FROM pg_control_system()), 'lsn', pg_current_wal_lsn()::text, 'last_replayed', to_char(pg_last_xact_replay_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || ' UTC', 'indexes_checked', $indexes, 'history', (SELECT coalesce(json_object_agg(name, pg_read_file('pg_wal/' || name)), '{}') FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{8}[.]history$'))")
say "phase stop"
as_pg "$BINDIR/pg_ctl" -D "$PGDATA" -m fast -w -t 300 stop >/dev/null
say "summary $summary"
if [ "$MODE" = restore ] && ! await_pgctl 120 test ! -e "$DATA/pgctl-restore-incomplete"; then
  say "pgctl did not mark the restored volume complete: it stays an interrupted restore's"
  exit 6
fi
