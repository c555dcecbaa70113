#!/bin/sh
# Runs inside the build: checks that every included component runs and prints the image
# manifest (JSON) on stdout. Any failure fails the build, so a broken image is never tagged.
set -eu
PG_MAJOR="$1"
COMPONENTS="$2"
has() { case " $COMPONENTS " in *" $1 "*) return 0;; esac; return 1; }
fail() { echo "pgctl image check: $*" >&2; exit 1; }
ext() { test -f "/usr/share/postgresql/$PG_MAJOR/extension/$1.control" || fail "extension $1 has no control file"; }
first_version() { "$@" 2>&1 | head -n1 | grep -oE '[0-9]+(\.[0-9]+)+' | head -n1; }

pg=$(first_version /usr/lib/postgresql/"$PG_MAJOR"/bin/postgres --version) || fail "postgres does not run"
[ -n "$pg" ] || fail "postgres --version printed no version"
ext amcheck
ext postgis
postgis=$(sed -n "s/^default_version = '\(.*\)'/\1/p" /usr/share/postgresql/"$PG_MAJOR"/extension/postgis.control)
patroni=$(first_version patroni --version) || fail "patroni does not run"
[ -n "$patroni" ] || fail "patroni --version printed no version"
python3 -c 'import etcd, consul, psycopg2' 2>/dev/null || fail "Patroni's etcd/consul/psycopg2 modules are missing"
pgbackrest=$(first_version pgbackrest version) || fail "pgbackrest does not run"
etcd=$(first_version etcd --version) || fail "etcd does not run"
tini=$(first_version tini --version) || fail "tini does not run"
test -x /usr/sbin/cron || fail "cron is missing"

timescaledb=""; walg=""; consul=""
if has timescaledb; then
  ext timescaledb
  timescaledb=$(sed -n "s/^default_version = '\(.*\)'/\1/p" /usr/share/postgresql/"$PG_MAJOR"/extension/timescaledb.control)
fi
if has walg; then walg=$(first_version wal-g --version) || fail "wal-g does not run"; [ -n "$walg" ] || fail "wal-g printed no version"; fi
if has consul; then consul=$(first_version consul version) || fail "consul does not run"; [ -n "$consul" ] || fail "consul printed no version"; fi

cat <<JSON
{
  "postgres": "$pg",
  "postgis": "$postgis",
  "timescaledb": "$timescaledb",
  "patroni": "$patroni",
  "pgbackrest": "$pgbackrest",
  "walg": "$walg",
  "etcd": "$etcd",
  "consul": "$consul",
  "tini": "$tini",
  "postgres-uid": "$(id -u postgres)",
  "postgres-gid": "$(id -g postgres)",
  "components": "$COMPONENTS"
}
JSON
