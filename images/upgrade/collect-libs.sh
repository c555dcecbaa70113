#!/bin/sh
# In the old image: every shared library PostgreSQL MAJOR's binaries and modules link against
# (ldd resolves the whole tree), copied into OUT. JIT (llvmjit) is left out: pg_upgrade does
# not need it and LLVM is large.
set -eu
major=$1
out=$2
mkdir -p "$out"
find "/usr/lib/postgresql/$major" -type f ! -name 'llvmjit*' | while read -r f; do
  ldd "$f" 2>/dev/null || true
done | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | sort -u | while read -r lib; do
  cp -L "$lib" "$out/"
done
