#!/bin/sh
# Runs inside the build: checks that every included component runs and prints the image
# manifest (JSON) on stdout. Any failure fails the build, so a broken image is never tagged.
#
# Each command's output and exit status are captured separately (no pipelines: a pipeline's
# status is its last command's, which hid failures before). The extensions are checked for
# real: a throwaway cluster (temp dir, unix socket only) is started with the libraries that
# need preloading and every included extension is created in it; nothing of it is left behind.
set -eu
PG_MAJOR="$1"
COMPONENTS="$2"
BIN=/usr/lib/postgresql/$PG_MAJOR/bin
# Patroni's bin_dir (links to BIN, and pg_isready-wait.sh): the throwaway cluster runs from it.
PATRONI_BIN=/usr/lib/pgctl/postgresql/$PG_MAJOR/bin
has() { case " $COMPONENTS " in *" $1 "*) return 0;; esac; return 1; }
fail() { echo "pgctl image check: $*" >&2; exit 1; }

# run LABEL CMD...: runs CMD, keeping its stdout in OUT and its stderr in ERR; fails the build,
# naming LABEL, when CMD exits non-zero.
ERR_FILE=$(mktemp)
run() {
  label=$1; shift
  status=0
  OUT=$("$@" 2>"$ERR_FILE") || status=$?
  ERR=$(cat "$ERR_FILE")
  [ "$status" -eq 0 ] || fail "$label: \`$*\` exited with status $status${OUT:+; output: $OUT}${ERR:+; error: $ERR}"
}

# version LABEL CMD...: runs CMD (as run does) and sets VERSION to the first dotted version
# number in its output; fails the build when CMD fails or prints none.
version() {
  label=$1
  run "$@"
  VERSION=$(sed -n 's/^[^0-9]*\([0-9][0-9]*\(\.[0-9][0-9]*\)\{1,\}\).*$/\1/p' <<EOF
$OUT
$ERR
EOF
)
  VERSION=${VERSION%%"
"*}
  [ -n "$VERSION" ] || fail "$label printed no version${OUT:+: $OUT}${ERR:+ $ERR}"
}

# The throwaway cluster, removed on every exit (success or failure).
TMP=""
cleanup() {
  if [ -n "$TMP" ] && [ -f "$TMP/data/postmaster.pid" ]; then
    setpriv --reuid=postgres --regid=postgres --init-groups "$BIN/pg_ctl" -D "$TMP/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  [ -z "$TMP" ] || rm -rf "$TMP"
  rm -f "$ERR_FILE"
}
trap cleanup EXIT
trap 'exit 1' HUP INT TERM
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }
# sql LABEL QUERY: runs QUERY in the throwaway cluster; OUT holds its result. A failing query
# fails the build with LABEL and PostgreSQL's error.
sql() {
  status=0
  OUT=$(as_postgres "$BIN/psql" -h "$TMP" -U postgres -d postgres -XAtq -v ON_ERROR_STOP=1 -c "$2" 2>"$ERR_FILE") || status=$?
  ERR=$(cat "$ERR_FILE")
  [ "$status" -eq 0 ] || fail "$1 (psql exited with status $status): $ERR"
}

version postgres "$BIN/postgres" --version
pg=$VERSION
# shellcheck disable=SC2016 # ${Version} is dpkg-query's field, not the shell's
run "postgresql-$PG_MAJOR package" dpkg-query -W -f '${Version}' "postgresql-$PG_MAJOR"
pg_package=$OUT
version patroni patroni --version
patroni=$VERSION
run "Patroni's etcd/consul/psycopg2 modules" python3 -c 'import etcd, consul, psycopg2'
version pgbackrest pgbackrest version
pgbackrest=$VERSION
version tini tini --version
tini=$VERSION
[ -x /usr/sbin/cron ] || fail "cron is missing"
version haproxy haproxy -v
haproxy=$VERSION
version pgbouncer pgbouncer --version
pgbouncer=$VERSION
version vip-manager vip-manager --version
vip_manager=$VERSION
version postgres_exporter prometheus-postgres-exporter --version
postgres_exporter=$VERSION
walg=""; consul=""; etcd=""
if has etcd; then version etcd etcd --version; etcd=$VERSION; fi
if has walg; then version wal-g wal-g --version; walg=$VERSION; fi
if has consul; then version consul consul version; consul=$VERSION; fi

# Extensions, in the order they are created (postgis_raster and postgis_topology need postgis).
extensions="amcheck postgis postgis_raster postgis_topology"
preload=""; settings=""
if has timescaledb; then
  extensions="$extensions timescaledb"; preload="timescaledb"; settings="-c timescaledb.telemetry_level=off"
fi
for e in $extensions; do
  [ -f "/usr/share/postgresql/$PG_MAJOR/extension/$e.control" ] || fail "extension $e has no control file"
done

TMP=$(mktemp -d /tmp/pgctl-check.XXXXXX)
chown postgres:postgres "$TMP"
[ -x "$PATRONI_BIN/pg_isready" ] || fail "$PATRONI_BIN/pg_isready is missing"
run initdb as_postgres "$PATRONI_BIN/initdb" -D "$TMP/data" -U postgres -A trust --no-sync
# Started with the libraries that must be preloaded: one that does not load stops the start.
status=0
as_postgres "$PATRONI_BIN/pg_ctl" -D "$TMP/data" -l "$TMP/server.log" -w -t 60 \
  -o "-c listen_addresses= -c unix_socket_directories=$TMP -c shared_preload_libraries=$preload $settings" \
  start >/dev/null 2>&1 || status=$?
if [ "$status" -ne 0 ]; then
  log=$(cat "$TMP/server.log" 2>/dev/null || true)
  if [ -n "$preload" ]; then
    fail "PostgreSQL does not start with shared_preload_libraries=$preload (extension $preload does not load): $log"
  fi
  fail "the throwaway PostgreSQL does not start (pg_ctl exited with status $status): $log"
fi
run "pg_isready in Patroni's bin_dir" as_postgres "$PATRONI_BIN/pg_isready" -h "$TMP" -q
versions=""
for e in $extensions; do
  sql "extension $e: CREATE EXTENSION $e failed" "CREATE EXTENSION $e"
  sql "extension $e" "SELECT extversion FROM pg_extension WHERE extname = '$e'"
  [ -n "$OUT" ] || fail "extension $e: created but not in pg_extension"
  versions="$versions $e=$OUT"
done
sql "server version" "SHOW server_version"
server=${OUT%% *}
[ "$server" = "$pg" ] || fail "the running server reports PostgreSQL $server, postgres --version $pg"
as_postgres "$BIN/pg_ctl" -D "$TMP/data" -m fast -w stop >/dev/null 2>&1 || fail "stopping the throwaway PostgreSQL failed"
rm -rf "$TMP"
TMP=""

# extversion EXT: the version recorded above ("" when the extension is not included).
extversion() {
  for pair in $versions; do
    [ "${pair%%=*}" = "$1" ] && { echo "${pair#*=}"; return 0; }
  done
  echo ""
}

cat <<JSON
{
  "postgres": "$pg",
  "postgres-package": "$pg_package",
  "postgis": "$(extversion postgis)",
  "postgis-raster": "$(extversion postgis_raster)",
  "postgis-topology": "$(extversion postgis_topology)",
  "amcheck": "$(extversion amcheck)",
  "timescaledb": "$(extversion timescaledb)",
  "patroni": "$patroni",
  "pgbackrest": "$pgbackrest",
  "walg": "$walg",
  "etcd": "$etcd",
  "consul": "$consul",
  "tini": "$tini",
  "haproxy": "$haproxy",
  "pgbouncer": "$pgbouncer",
  "vip-manager": "$vip_manager",
  "postgres-exporter": "$postgres_exporter",
  "postgres-uid": "$(id -u postgres)",
  "postgres-gid": "$(id -g postgres)",
  "patroni-bin-dir": "$PATRONI_BIN",
  "components": "$COMPONENTS"
}
JSON
