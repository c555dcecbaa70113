#!/bin/sh
# In the upgrade image: of the old major's libraries in DIR, keep only those whose names this
# image lacks (an older libssl, libicu, libproj, ...), so nothing shadows the libraries of the
# new major; then make them loadable and prove the old binaries and modules resolve.
set -eu
major=$1
dir=$2
for lib in "$dir"/*; do
  [ -e "$lib" ] || continue
  name=$(basename "$lib")
  if ldconfig -p | grep -qF "	$name ("; then
    rm -f "$lib"
  fi
done
echo "$dir" >/etc/ld.so.conf.d/zz-pgctl-old-postgresql.conf
ldconfig
missing=$(find "/usr/lib/postgresql/$major" -type f ! -name 'llvmjit*' -exec sh -c 'ldd "$1" 2>/dev/null | grep "not found" | sed "s|^|$1: |"' sh {} \;)
if [ -n "$missing" ]; then
  echo "pgctl: PostgreSQL $major's files miss libraries in the upgrade image:" >&2
  echo "$missing" >&2
  exit 1
fi
"/usr/lib/postgresql/$major/bin/postgres" --version
