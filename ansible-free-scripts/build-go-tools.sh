#!/usr/bin/env bash
# Builds WAL-G and Consul from the Go module proxy (never from other source downloads), once,
# and writes the artifacts directory that `pgctl image build --artifacts DIR` reads:
#   DIR/wal-g  DIR/consul  DIR/VERSIONS  DIR/SHA256SUMS (sha256sum's format, names relative).
# Usage: build-go-tools.sh [--out DIR | DIR]   (default ${PGCTL_CACHE:-/var/cache/pgctl}/artifacts)
# Binaries are cached in ${PGCTL_CACHE:-/var/cache/pgctl}/{wal-g,consul}-VERSION/bin and reused
# (a second run builds nothing). The first run takes several minutes of 2 cores.
set -euo pipefail

# WAL-G: its v2/v3 tags are not module versions (the module path has no /vN), so only v0/v1
# tags and pseudo-versions (v1.1.2-0.<commit time>-<commit>) can come from the module proxy.
# The proxy this project reaches serves v0.2.19, v0.2.20 and v1.1.1 of this module and refuses
# commit and branch queries, so v1.1.1 is the newest WAL-G it can build. v1.1.1 backs up with
# pg_start_backup()/pg_stop_backup(), which PostgreSQL 15 replaced by pg_backup_start() and
# pg_backup_stop() (non-exclusive only; the stop's one argument is wait_for_archive, which the
# old two-argument call left at its default, true): patch_walg_pg15 below adds the two
# calls for PostgreSQL 15 and later, pgctl's only change to WAL-G. Set WALG_VERSION (and
# WALG_SUM, its go.sum hash) to a pseudo-version of a v3 release commit once one is resolvable;
# the patch is then skipped (v2 and later call the new functions themselves).
WALG_VERSION=${WALG_VERSION:-v1.1.1}
# Bumped whenever the patch changes, so a cached binary built without it is rebuilt.
WALG_PATCH=pgctl-pg15-2
WALG_SUM=${WALG_SUM:-h1:KN5d8sntzELd/JyG2aGcC/Nmb8PvKSjmfiV3BSktF1Y=}
# Consul: the licence changed from MPL-2.0 to BUSL-1.1 in August 2023 (1.17 onwards), and the
# 1.16 branch followed: 1.16.3 still ships MPL-2.0, 1.16.5 and 1.16.6 ship BUSL-1.1 (1.16.4 is
# not served). So 1.16.3 is the newest MPL-2.0 release we can get, and it builds with Go 1.26. The script reads the licence from
# the module itself and records it, so a changed pin cannot ship under the wrong licence name.
CONSUL_VERSION=${CONSUL_VERSION:-v1.16.3}
CONSUL_SUM=${CONSUL_SUM:-h1:XwZrfgL8x0lK0hvGzwD1kUowvkbFtQblc9H6wDfH0Tc=}
# Consul's go.mod replaces these nested modules with ./dir, which its module zip leaves out;
# these are the published versions its go.mod requires.
CONSUL_SUBMODULES=(api@v1.25.1 envoyextensions@v0.4.1 proto-public@v0.4.1 sdk@v0.14.1 troubleshoot@v0.3.1)
# What WAL-G's Makefile builds releases with (pg_build: brotli, plus USE_LIBSODIUM and USE_LZO).
# netgo/osusergo and -static make one binary that runs in any image, without libsodium23.
WALG_TAGS="brotli libsodium lzo netgo osusergo"

CACHE=${PGCTL_CACHE:-/var/cache/pgctl}
OUT=$CACHE/artifacts
while [ $# -gt 0 ]; do
  case $1 in
    --out) OUT=${2:?--out needs a directory}; shift 2 ;;
    --out=*) OUT=${1#--out=}; shift ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) OUT=$1; shift ;;
  esac
done
WALG_ROOT=$CACHE/wal-g-$WALG_VERSION
[ "$WALG_VERSION" != v1.1.1 ] || WALG_ROOT=$CACHE/wal-g-$WALG_VERSION-$WALG_PATCH
CONSUL_ROOT=$CACHE/consul-$CONSUL_VERSION

command -v go >/dev/null || PATH=$PATH:/usr/local/go/bin
command -v go >/dev/null || { echo "go not found (expected in PATH or /usr/local/go/bin)" >&2; exit 1; }
# A pin that needs a newer Go fails here instead of fetching another toolchain behind our back.
export GOTOOLCHAIN=${GOTOOLCHAIN:-local}

# Debian packages the WAL-G build links statically; installed only when missing.
need_debs() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing ${missing[*]}"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

# Every module is checked against the checksum database (GOSUMDB), reached through the proxy or
# directly; the two top modules also against the hashes pinned above.
sumdb_check() {
  local db proxy
  db=$(go env GOSUMDB); db=${db%% *}
  proxy=$(go env GOPROXY); proxy=${proxy%%[,|]*}
  need_debs curl ca-certificates
  if [ "$db" = off ]; then
    echo "WARNING: GOSUMDB=off: modules are checked only against go.sum and the pinned hashes" >&2
    return 0
  fi
  if { [ "${proxy#http}" != "$proxy" ] && curl -fsS -m 15 -o /dev/null "$proxy/sumdb/$db/supported"; } ||
     curl -fsS -m 15 -o /dev/null "https://$db/latest"; then
    echo "checksum database $db: reachable"
    return 0
  fi
  echo "WARNING: checksum database $db is NOT reachable: modules are checked only against" \
       "go.sum files and the pinned hashes (GONOSUMDB set for wal-g and consul)" >&2
  export GONOSUMDB=github.com/wal-g/wal-g,github.com/hashicorp/consul
  export GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=mod"
}

# Downloads MODULE@VERSION into the module cache and checks its go.sum hash against the pin;
# sets MOD_DIR, MOD_COMMIT (when the proxy knows it) and MOD_TIME.
fetch_module() {
  local json sum info
  json=$(go mod download -json "$1@$2")
  sum=$(sed -n 's/^\t"Sum": "\(.*\)",$/\1/p' <<<"$json")
  if [ "$sum" != "$3" ]; then
    echo "$1@$2: module hash ${sum:-?} is not the pinned $3" >&2
    return 1
  fi
  MOD_DIR=$(sed -n 's/^\t"Dir": "\(.*\)",$/\1/p' <<<"$json")
  MOD_COMMIT=$(sed -n 's/^\t\t"Hash": "\(.*\)",$/\1/p' <<<"$json")
  info=$(sed -n 's/^\t"Info": "\(.*\)",$/\1/p' <<<"$json")
  MOD_TIME=$(sed -n 's/.*"Time": *"\([^"]*\)".*/\1/p' "$info")
  echo "$1@$2: module hash $sum (pinned) ok${MOD_COMMIT:+, commit $MOD_COMMIT}"
}

# The licence a module's own LICENSE file states, as an SPDX name.
license_of() {
  local f
  f=$(find "$1" -maxdepth 1 -name 'LICENSE*' | sort | head -n 1)
  if [ -z "$f" ]; then echo unknown
  elif grep -q 'Business Source License' "$f"; then echo BUSL-1.1
  elif grep -q 'Mozilla Public License' "$f"; then echo MPL-2.0
  elif grep -q 'Apache License' "$f"; then echo Apache-2.0
  else echo unknown; fi
}

# Copies a module out of the read-only module cache into a writable build directory.
copy_module() {
  rm -rf "$2"
  mkdir -p "$(dirname "$2")"
  cp -r "$1" "$2"
  chmod -R u+w "$2"
}

BUILD=$(mktemp -d "${TMPDIR:-/tmp}/pgctl-go-tools.XXXXXX")
trap 'rm -rf "$BUILD"' EXIT
SUMDB_CHECKED=

build_walg() {
  local bin=$WALG_ROOT/bin/wal-g src=$BUILD/wal-g start ver
  if [ -x "$bin" ] && "$bin" --version >/dev/null 2>&1; then
    echo "wal-g $WALG_VERSION: cached at $bin"
    return 0
  fi
  start=$(date +%s)
  need_debs gcc libc6-dev libsodium-dev liblzo2-dev libbrotli-dev
  [ -n "$SUMDB_CHECKED" ] || { sumdb_check; SUMDB_CHECKED=1; }
  echo "building wal-g $WALG_VERSION from the Go module proxy (first run only)..."
  fetch_module github.com/wal-g/wal-g "$WALG_VERSION" "$WALG_SUM"
  copy_module "$MOD_DIR" "$src"
  [ "$WALG_VERSION" != v1.1.1 ] || patch_walg_pg15 "$src/internal/databases/postgres/queryRunner.go"
  ver=github.com/wal-g/wal-g/cmd/pg
  (
    cd "$src"
    go mod verify >/dev/null
    # -static: libsodium, lzo and brotli come from Debian's .a files, no shared libs at run time.
    # Static linking needs brotli's libraries in dependency order (cbrotli names them the other
    # way round) and libm, which the shared libbrotlienc would have pulled in.
    CGO_ENABLED=1 go build -trimpath -buildvcs=false -tags "$WALG_TAGS" -o "$src/wal-g.out" \
      -ldflags "-s -w -linkmode external \
        -extldflags '-static -lbrotlienc -lbrotlidec -lbrotlicommon -lm' \
        -X $ver.walgVersion=$WALG_VERSION${WALG_ROOT##*"$WALG_VERSION"} -X $ver.gitRevision=${MOD_COMMIT:-$WALG_VERSION} \
        -X $ver.buildDate=$MOD_TIME" \
      ./main/pg
  )
  check_walg "$src/wal-g.out"
  mkdir -p "$WALG_ROOT/bin"
  license_of "$src" >"$WALG_ROOT/LICENSE-ID"
  mv -f "$src/wal-g.out" "$bin"
  echo "wal-g $WALG_VERSION: built in $(($(date +%s) - start))s -> $bin"
}

# PostgreSQL 15 renamed the backup functions (pg_start_backup -> pg_backup_start, whose
# exclusive argument is gone; pg_stop_backup -> pg_backup_stop). Adds a PostgreSQL 15 case to
# WAL-G v1.1.1's start and stop queries; fails if the source is not what the sed expects.
patch_walg_pg15() {
  local f=$1
  # $1 is the SQL parameter in Go source, not a shell expansion.
  # shellcheck disable=SC2016
  sed -i \
    -e '/BuildStartBackup() (string, error)/,/^}/ s/^\tcase queryRunner.Version >= 100000:$/\tcase queryRunner.Version >= 150000:\n\t\treturn "SELECT case when pg_is_in_recovery()" +\n\t\t\t" then '"''"' else (pg_walfile_name_offset(lsn)).file_name end, lsn::text, pg_is_in_recovery()" +\n\t\t\t" FROM pg_backup_start($1, true) lsn", nil\n&/' \
    -e 's/^\t\treturn "SELECT labelfile, spcmapfile, lsn FROM pg_stop_backup(false)", nil$/\t\tif queryRunner.Version >= 150000 {\n\t\t\treturn "SELECT labelfile, spcmapfile, lsn FROM pg_backup_stop(true)", nil\n\t\t}\n&/' \
    "$f"
  # shellcheck disable=SC2016
  if [ "$(grep -c 'pg_backup_start(\$1, true) lsn\|FROM pg_backup_stop(true)' "$f")" != 2 ]; then
    echo "patching wal-g for PostgreSQL 15 failed: $f is not WAL-G v1.1.1's" >&2
    return 1
  fi
  if [ -n "$(gofmt -l "$f")" ]; then
    echo "patching wal-g for PostgreSQL 15 left $f unformatted (the sed is off)" >&2
    return 1
  fi
  echo "wal-g: patched for PostgreSQL 15's pg_backup_start/pg_backup_stop"
}

# Proves libsodium is compiled in: a WAL file pushed with WALG_LIBSODIUM_KEY comes back intact
# with the key and not without it (a build without libsodium refuses the key outright).
check_walg() {
  local bin=$1 t key wal=000000010000000000000001
  "$bin" --version
  if ldd "$bin" >/dev/null 2>&1; then
    echo "wal-g is dynamically linked:" >&2; ldd "$bin" >&2; return 1
  fi
  t=$BUILD/walg-check
  mkdir -p "$t/pg_wal/archive_status" "$t/store"
  head -c 65536 /dev/urandom >"$t/pg_wal/$wal"
  key=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
  (
    cd "$t"
    # File storage, and no prefetch: it would leave a background process behind.
    export WALG_FILE_PREFIX=$t/store WALG_COMPRESSION_METHOD=lz4 WALG_DOWNLOAD_CONCURRENCY=1
    WALG_LIBSODIUM_KEY=$key "$bin" wal-push "$t/pg_wal/$wal"
    WALG_LIBSODIUM_KEY=$key "$bin" wal-fetch "$wal" "$t/with-key"
    "$bin" wal-fetch "$wal" "$t/without-key" || true
  ) >"$t/log" 2>&1 || { cat "$t/log" >&2; echo "wal-g: libsodium round trip failed" >&2; return 1; }
  if ! cmp -s "$t/pg_wal/$wal" "$t/with-key" || cmp -s "$t/pg_wal/$wal" "$t/without-key"; then
    cat "$t/log" >&2; echo "wal-g: WAL is not stored encrypted with libsodium" >&2; return 1
  fi
  echo "wal-g: libsodium encryption round trip ok"
  rm -rf "$t"
}

build_consul() {
  local bin=$CONSUL_ROOT/bin/consul src=$BUILD/consul start m gets=()
  if [ -x "$bin" ] && "$bin" version >/dev/null 2>&1; then
    echo "consul $CONSUL_VERSION: cached at $bin"
    return 0
  fi
  start=$(date +%s)
  [ -n "$SUMDB_CHECKED" ] || { sumdb_check; SUMDB_CHECKED=1; }
  echo "building consul $CONSUL_VERSION from the Go module proxy (first run only)..."
  fetch_module github.com/hashicorp/consul "$CONSUL_VERSION" "$CONSUL_SUM"
  copy_module "$MOD_DIR" "$src"
  (
    cd "$src"
    for m in "${CONSUL_SUBMODULES[@]}"; do
      go mod edit -dropreplace="github.com/hashicorp/consul/${m%@*}"
      gets+=("github.com/hashicorp/consul/$m")
    done
    # The published versions its go.mod already requires: adds their go.sum lines, changes nothing else.
    go get "${gets[@]}"
    go mod verify >/dev/null
    CGO_ENABLED=0 go build -trimpath -buildvcs=false -o "$src/consul.out" \
      -ldflags "-s -w -X github.com/hashicorp/consul/version.GitCommit=${MOD_COMMIT:0:12} \
        -X github.com/hashicorp/consul/version.BuildDate=$MOD_TIME" .
  )
  "$src/consul.out" version
  mkdir -p "$CONSUL_ROOT/bin"
  license_of "$src" >"$CONSUL_ROOT/LICENSE-ID"
  mv -f "$src/consul.out" "$bin"
  echo "consul $CONSUL_VERSION: built in $(($(date +%s) - start))s -> $bin"
}

build_walg
build_consul

# The artifacts directory: our files replaced, other listed artifacts (e.g. timescaledb*.deb)
# keep their SHA256SUMS lines.
mkdir -p "$OUT"
install -m 0755 "$WALG_ROOT/bin/wal-g" "$OUT/wal-g"
install -m 0755 "$CONSUL_ROOT/bin/consul" "$OUT/consul"
{
  echo "wal-g ${WALG_VERSION#v}${WALG_ROOT##*"$WALG_VERSION"} $(cat "$WALG_ROOT/LICENSE-ID")"
  echo "consul ${CONSUL_VERSION#v} $(cat "$CONSUL_ROOT/LICENSE-ID")"
} >"$OUT/VERSIONS"
(
  cd "$OUT"
  if [ -f SHA256SUMS ]; then
    awk '{n=$2; sub(/^\*/, "", n)} n != "wal-g" && n != "consul" && n != "VERSIONS"' SHA256SUMS
  fi >SHA256SUMS.new
  sha256sum wal-g consul VERSIONS >>SHA256SUMS.new
  mv -f SHA256SUMS.new SHA256SUMS
  sha256sum -c --quiet SHA256SUMS
)
echo "artifacts: $OUT"
cat "$OUT/VERSIONS"
