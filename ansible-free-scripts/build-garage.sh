#!/usr/bin/env bash
# Builds the Garage S3 server the lab runs (a real S3 implementation, from crates.io), once:
# the binary is cached in /var/cache/pgctl and reused by later runs (about 8-15 minutes of
# 2 cores the first time at optimisation level 3; see below).
set -euo pipefail
VERSION=2.5.0
ROOT=${PGCTL_CACHE:-/var/cache/pgctl}/garage-$VERSION
BIN=$ROOT/bin/garage
if [ -x "$BIN" ] && "$BIN" --version >/dev/null 2>&1; then
  echo "garage $VERSION: cached at $BIN"
  exit 0
fi
mkdir -p "$ROOT"
echo "building garage $VERSION from crates.io (first run only)..."
# Optimisation level 1: the lab's S3 server moves test data, not production traffic, and the
# build is the longest step of a fresh machine's test run (GARAGE_OPT_LEVEL=3 for a faster server).
CARGO_PROFILE_RELEASE_OPT_LEVEL=${GARAGE_OPT_LEVEL:-1} \
  cargo install garage --version "$VERSION" --locked --root "$ROOT" --quiet
"$BIN" --version
