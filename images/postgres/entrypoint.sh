#!/bin/sh
# PID 1 is tini; this prepares the container and execs the role's command (Patroni by default).
set -eu
# Files pgctl uploads are 0600 and owned by postgres; refuse to start with world-readable secrets.
for f in /etc/pgctl/*; do
  [ -f "$f" ] || continue
  [ "$f" = /etc/pgctl/manifest.json ] && continue
  case "$(stat -c %a "$f")" in *00) ;; *) echo "pgctl-entrypoint: $f must not be readable by others" >&2; exit 1;; esac
done
if [ "$(id -u)" = 0 ] && [ "${1:-}" = patroni ]; then
  chown postgres:postgres /var/lib/postgresql/data
  chmod 0700 /var/lib/postgresql/data
  # cron runs as root: scheduled backups (the engine runs as postgres) and the volume-usage probe.
  if [ -f /etc/pgctl/crontab ]; then crontab /etc/pgctl/crontab && cron; fi
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$@"
fi
exec "$@"
