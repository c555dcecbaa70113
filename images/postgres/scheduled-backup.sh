#!/bin/sh
# Run by cron (as root) in every Patroni container on the backup schedule. Only the member
# that is leader at that moment backs up (asked of Patroni's REST API at run time); a lock
# keeps two runs from overlapping. The outcome is appended to a file on the data volume that
# `pgctl status` reads, and the output goes to the container log (`docker logs patroni`).
set -u
OUT=/proc/1/fd/1
STATUS=/var/lib/postgresql/data/pgctl-backups.jsonl
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 http://127.0.0.1:8008/leader)
[ "$code" = 200 ] || exit 0
exec 9>/tmp/pgctl-scheduled-backup.lock
if ! flock -n 9; then
  echo "pgctl scheduled backup: the previous one is still running; skipped" >"$OUT"
  exit 0
fi
start=$(date -u +%s)
echo "pgctl scheduled backup: starting on $(hostname)" >"$OUT"
if setpriv --reuid=postgres --regid=postgres --init-groups env PGPASSFILE=/etc/pgctl/pgpass HOME=/var/lib/postgresql "$@" >"$OUT" 2>&1; then
  ok=true
else
  ok=false
fi
end=$(date -u +%s)
size=$(du -sb /var/lib/postgresql/data/pgdata 2>/dev/null | cut -f1)
echo "{\"start\":$start,\"end\":$end,\"ok\":$ok,\"host\":\"$(hostname)\",\"size_bytes\":${size:-null}}" >>"$STATUS"
echo "pgctl scheduled backup: finished ok=$ok in $((end - start))s" >"$OUT"
