#!/bin/sh
# Run by cron (as root) in every Patroni container on the backup schedule. Only the member
# that is leader at that moment backs up (asked of Patroni's REST API at run time); a lock
# keeps two runs from overlapping. The outcome (with the engine's last error line when it
# failed) is appended to a file on the data volume that `pgctl status` reads, and the output
# goes to the container log (`docker logs patroni`).
set -u
OUT=/proc/1/fd/1
STATUS=/var/lib/postgresql/data/pgctl-backups.jsonl
LOG=/tmp/pgctl-scheduled-backup.out
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 http://127.0.0.1:8008/leader)
[ "$code" = 200 ] || exit 0
exec 9>/tmp/pgctl-scheduled-backup.lock
if ! flock -n 9; then
  echo "pgctl scheduled backup: the previous one is still running; skipped" >"$OUT"
  exit 0
fi
start=$(date -u +%s)
echo "pgctl scheduled backup: starting on $(hostname)" >"$OUT"
if setpriv --reuid=postgres --regid=postgres --init-groups env PGPASSFILE=/etc/pgctl/pgpass HOME=/var/lib/postgresql "$@" >"$LOG" 2>&1; then
  ok=true
  error=
else
  ok=false
  error=$(grep -E 'ERROR|FATAL|[Ee]rror' "$LOG" | tail -n 1)
  [ -n "$error" ] || error=$(tail -n 1 "$LOG")
fi
cat "$LOG" >"$OUT"
end=$(date -u +%s)
size=$(du -sb /var/lib/postgresql/data/pgdata 2>/dev/null | cut -f1)
# python3 (Patroni's) writes the record so that the error line is quoted correctly.
START=$start END=$end OK=$ok SIZE=${size:-} ERROR=$error python3 -c '
import json, os, socket
e = os.environ
record = {"start": int(e["START"]), "end": int(e["END"]), "ok": e["OK"] == "true",
          "host": socket.gethostname(), "size_bytes": int(e["SIZE"]) if e["SIZE"] else None}
if e["ERROR"]:
    record["error"] = e["ERROR"][:500]
print(json.dumps(record))' >>"$STATUS"
echo "pgctl scheduled backup: finished ok=$ok in $((end - start))s" >"$OUT"
