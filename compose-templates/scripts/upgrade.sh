#!/bin/sh
# pgctl migrate from-volume --method upgrade, in throwaway containers on the volume's host.
#   upgrade.sh facts CANDIDATE...
#       in the image the standalone server ran (its pg_controldata): which candidate directory
#       holds the data (the volume's root or a subdirectory) and what it is. Reads only.
#   upgrade.sh check OLD_MAJOR NEW_MAJOR OLD_PGDATA
#       in the upgrade image (both majors): starts and cleanly stops the old server once to read
#       its locale, install user and extensions, then `pg_upgrade --check` against a scratch
#       new cluster. The old directory gets only that clean start and stop.
#   upgrade.sh upgrade OLD_MAJOR NEW_MAJOR OLD_PGDATA NEW_PGDATA link|copy UID GID
#       initdb NEW_PGDATA like the old cluster, pg_upgrade --link or --copy, the cluster's roles
#       from /tmp/pgctl-roles.sql, then hands the new directory to the cluster's postgres
#       (UID:GID). On failure the new directory is emptied and, after --link, the old one's
#       global/pg_control restored (it starts again).
# The old and new servers run as the old directory's owner (a throwaway user with its uid),
# so the old directory is never chowned; only on unix sockets in /tmp, with trust for that
# user in a pg_hba.conf of their own (the directories' own pg_hba.conf stay as they are).
# Progress on stderr (`pgctl: ...`), the result as one JSON line on stdout.
set -eu
MODE=$1
shift
log() { echo "pgctl: $*" >&2; }
die() {
  echo "pgctl: $*" >&2
  exit 1
}

# The data directory's owner, as a user the servers can run as.
as_owner_setup() {
  dir=$1
  OWNER_UID=$(stat -c %u "$dir")
  OWNER_GID=$(stat -c %g "$dir")
  if ! getent passwd "$OWNER_UID" >/dev/null; then
    echo "pgctl-old:x:$OWNER_UID:$OWNER_GID:pgctl upgrade:/tmp:/bin/sh" >>/etc/passwd
  fi
  mkdir -p /tmp/pgctl-sock /tmp/pgctl-work
  chown "$OWNER_UID:$OWNER_GID" /tmp/pgctl-sock /tmp/pgctl-work
  printf 'local all all trust\n' >/tmp/pgctl-hba.conf
  chmod 644 /tmp/pgctl-hba.conf
}
as_owner() { setpriv --reuid="$OWNER_UID" --regid="$OWNER_GID" --clear-groups env HOME=/tmp "$@"; }
SERVER_OPTS="-c listen_addresses= -c unix_socket_directories=/tmp/pgctl-sock -c hba_file=/tmp/pgctl-hba.conf -c archive_mode=off"

case "$MODE" in
facts)
  old=""
  for candidate in "$@"; do
    if [ -f "$candidate/PG_VERSION" ]; then
      old=$candidate
      break
    fi
  done
  [ -n "$old" ] || die "the volume holds no PostgreSQL data directory (no PG_VERSION in $*)"
  major=$(cat "$old/PG_VERSION")
  control=/usr/lib/postgresql/$major/bin/pg_controldata
  [ -x "$control" ] || die "the source image has no pg_controldata for PostgreSQL $major"
  state=$(LC_ALL=C "$control" "$old" | sed -n 's/^Database cluster state: *//p')
  checksums=$(LC_ALL=C "$control" "$old" | sed -n 's/^Data page checksum version: *//p')
  size_kb=$(du -sk "$old" | cut -f1)
  free_kb=$(df -Pk "$old" | awk 'NR == 2 {print $4}')
  conf=false
  [ -f "$old/postgresql.conf" ] && conf=true
  glibc=$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}' || true)
  printf '{"dir":"%s","major":%s,"state":"%s","checksums":%s,"uid":%s,"gid":%s,"size_kb":%s,"free_kb":%s,"conf":%s,"glibc":"%s"}\n' \
    "$old" "$major" "$state" "${checksums:-0}" "$(stat -c %u "$old")" "$(stat -c %g "$old")" "$size_kb" "$free_kb" "$conf" "$glibc"
  ;;

check | upgrade)
  old_major=$1 new_major=$2 old=$3
  oldbin=/usr/lib/postgresql/$old_major/bin
  newbin=/usr/lib/postgresql/$new_major/bin
  [ -x "$oldbin/postgres" ] || die "the upgrade image has no PostgreSQL $old_major binaries"
  as_owner_setup "$old"

  # The old cluster's locale, install user and extensions (one clean start and stop).
  log "phase inspect"
  as_owner "$oldbin/pg_ctl" -D "$old" -o "$SERVER_OPTS -p 50431" -l /tmp/pgctl-work/old.log -w -t 120 start >/dev/null ||
    die "the old server does not start: $(tail -5 /tmp/pgctl-work/old.log)"
  q() { as_owner "$oldbin/psql" -h /tmp/pgctl-sock -p 50431 -U postgres -d "${2:-template1}" -XAtq -v ON_ERROR_STOP=1 -c "$1"; }
  locale=$(q "SELECT pg_encoding_to_char(encoding) || '|' || datcollate || '|' || datctype FROM pg_database WHERE datname = 'template0'")
  install_user=$(q "SELECT rolname FROM pg_authid WHERE oid = 10")
  extensions=""
  for db in $(q "SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1"); do
    for e in $(q "SELECT extname || ':' || extversion FROM pg_extension WHERE extname <> 'plpgsql' ORDER BY 1" "$db"); do
      extensions="$extensions{\"database\":\"$db\",\"name\":\"${e%%:*}\",\"version\":\"${e#*:}\"},"
    done
  done
  as_owner "$oldbin/pg_ctl" -D "$old" -m fast -w -t 120 stop >/dev/null
  encoding=${locale%%|*}
  rest=${locale#*|}
  collate=${rest%%|*}
  ctype=${rest#*|}
  checksums=""
  if [ "$(LC_ALL=C "$oldbin/pg_controldata" "$old" | sed -n 's/^Data page checksum version: *//p')" != "0" ]; then
    checksums="--data-checksums"
  fi

  if [ "$MODE" = check ]; then
    new=/tmp/pgctl-work/new
  else
    new=$4 method=$5 uid=$6 gid=$7
    [ ! -e "$new" ] || [ -z "$(ls -A "$new")" ] || die "$new is not empty"
    mkdir -p "$new"
    chown "$OWNER_UID:$OWNER_GID" "$new"
    chmod 0700 "$new"
  fi
  log "phase initdb"
  # shellcheck disable=SC2086 # $checksums is one flag or nothing
  as_owner "$newbin/initdb" -D "$new" -U "$install_user" --encoding "$encoding" --lc-collate "$collate" --lc-ctype "$ctype" $checksums >/tmp/pgctl-work/initdb.log 2>&1 ||
    die "initdb of the new cluster like the old one (encoding $encoding, collation $collate) failed: $(tail -3 /tmp/pgctl-work/initdb.log)"

  new_started=no
  restore_old() {
    # After --link the old directory is usable again until the new cluster has started once.
    if [ "$new_started" = no ] && [ -f "$old/global/pg_control.old" ] && [ ! -f "$old/global/pg_control" ]; then
      mv "$old/global/pg_control.old" "$old/global/pg_control"
      log "the old data directory's global/pg_control is restored: it starts again"
    fi
  }
  upgrade_failed() {
    if [ "$new_started" = yes ] && [ "$method" = link ]; then
      log "the new cluster had started on the linked files: the old data directory is no longer usable (restore it from a backup, or retry with --copy)"
    fi
    restore_old
    rm -rf "${new:?}"/* 2>/dev/null || true
    die "$1"
  }
  run_pg_upgrade() {
    cd /tmp/pgctl-work
    as_owner "$newbin/pg_upgrade" -b "$oldbin" -B "$newbin" -d "$old" -D "$new" -U "$install_user" \
      -s /tmp/pgctl-sock -p 50431 -P 50432 -o "$SERVER_OPTS" -O "$SERVER_OPTS" "$@" >/tmp/pgctl-work/pg_upgrade.out 2>&1
  }
  if [ "$MODE" = check ]; then
    log "phase pg_upgrade --check"
    run_pg_upgrade --check ||
      die "pg_upgrade --check: $(grep -v '^$' /tmp/pgctl-work/pg_upgrade.out | tail -8)"
  else
    log "phase pg_upgrade --$method"
    run_pg_upgrade "--$method" -j 2 || {
      find "$new" -name '*.txt' -path '*pg_upgrade_output*' -exec cat {} + >&2 2>/dev/null || true
      upgrade_failed "pg_upgrade --$method: $(grep -v '^$' /tmp/pgctl-work/pg_upgrade.out | tail -8)"
    }
    # The cluster's own roles (superuser, replication, rewind) as secrets.toml has them, before
    # Patroni or any replica logs in (the SQL comes as a 0600 file, never on a command line).
    log "phase cluster roles"
    new_started=yes
    as_owner "$newbin/pg_ctl" -D "$new" -o "$SERVER_OPTS -p 50432" -l /tmp/pgctl-work/new.log -w -t 120 start >/dev/null ||
      upgrade_failed "the upgraded cluster does not start: $(tail -5 /tmp/pgctl-work/new.log)"
    as_owner "$newbin/psql" -h /tmp/pgctl-sock -p 50432 -U "$install_user" -d postgres -XAtq -v ON_ERROR_STOP=1 -f /tmp/pgctl-roles.sql >/dev/null ||
      upgrade_failed "setting the cluster's roles failed"
    as_owner "$newbin/pg_ctl" -D "$new" -m fast -w -t 120 stop >/dev/null
    rm -f /tmp/pgctl-roles.sql
    # The cluster's postgres owns the new directory and the volume's root (after --link the
    # old files too: they are the same files now).
    chown -R "$uid:$gid" "$new"
    chown "$uid:$gid" "$(dirname "$new")"
    chmod 0700 "$(dirname "$new")"
    rm -f "$new/delete_old_cluster.sh" /tmp/pgctl-work/delete_old_cluster.sh
  fi
  glibc=$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}' || true)
  printf '{"install_user":"%s","encoding":"%s","collate":"%s","ctype":"%s","checksums":%s,"glibc":"%s","extensions":[%s]}\n' \
    "$install_user" "$encoding" "$collate" "$ctype" "$([ -n "$checksums" ] && echo true || echo false)" "$glibc" "${extensions%,}"
  ;;
*)
  die "usage: upgrade.sh facts|check|upgrade ..."
  ;;
esac
