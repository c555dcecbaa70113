#!/bin/sh
# Patroni's first create_replica_method when the cluster has a backup repository (patroni.yml):
# builds a new replica from a backup in S3 instead of a pg_basebackup from the leader, when
# `pgctl node add --replica-from backup|auto` asked for it by leaving the backup engine's fetch
# command (one argument per line) in REQUEST on the data volume. Without a request it exits 1
# at once and Patroni goes on to its next method, the basebackup. A failed fetch also exits 1:
# Patroni then cleans the data directory and takes the basebackup (the fallback).
# The request is used once (a later reinit takes the basebackup again); RESULT tells pgctl
# what happened. Run by Patroni as postgres, with no parameters (no_params).
# With a file as its argument (the standby leader of a disaster-recovery cluster, see
# patroni.yml's pgctl_primary_backup), it runs the fetch that file holds, every time.
set -u
DATA=/var/lib/postgresql/data
PGDATA=$DATA/pgdata
REQUEST=${1:-$DATA/pgctl-replica-request}
RESULT=$DATA/pgctl-replica-result

if [ ! -s "$REQUEST" ]; then
  echo "pgctl: no request for a replica from S3: Patroni takes a basebackup from the leader"
  exit 1
fi
set --
while IFS= read -r arg; do
  set -- "$@" "$arg"
done <"$REQUEST"
case "$REQUEST" in
"$DATA"/*) rm -f "$REQUEST" ;;
esac
start=$(date +%s)
echo "pgctl: creating this replica from the backup in S3: $*"
mkdir -m 0700 "$PGDATA"
"$@"
code=$?
if [ "$code" -eq 0 ]; then
  echo "{\"method\":\"backup\",\"seconds\":$(($(date +%s) - start))}" >"$RESULT"
  exit 0
fi
echo "pgctl: the fetch from S3 failed (exit $code): Patroni falls back to a basebackup from the leader"
echo "{\"method\":\"basebackup after a failed fetch\",\"fetch_exit\":$code,\"seconds\":$(($(date +%s) - start))}" >"$RESULT"
exit 1
