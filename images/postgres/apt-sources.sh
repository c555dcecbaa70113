#!/bin/sh
# Runs inside the build before the first `apt-get update`: makes sure apt sees Debian's
# point-release updates (<suite>-updates) and security fixes (<suite>-security), whatever the
# base image's sources had (a base made by an older pgctl had only <suite>). Suites already
# configured (debian:*-slim's debian.sources, pgctl's current base) are left as they are.
set -eu
SECURITY_MIRROR="${1:-http://deb.debian.org/debian-security}"
# shellcheck source=/dev/null
. /etc/os-release
suite="${VERSION_CODENAME:?/etc/os-release has no VERSION_CODENAME}"
lists=""
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] && lists="$lists $f"
done

# configured SUITE: whether any source names SUITE (one-line or deb822 format).
configured() {
  for f in $lists; do
    grep -Eq "^[^#]*[[:space:]]$1([[:space:]]|\$)" "$f" && return 0
  done
  return 1
}

# The main suite's mirror and options (one-line format), for the updates suite; Debian's CDN
# otherwise.
mirror=$(sed -n "s|^deb[[:space:]]\{1,\}\(\[[^]]*\][[:space:]]\{1,\}\)\{0,1\}\([^[:space:]]*\)[[:space:]]\{1,\}${suite}[[:space:]].*|\1\2|p" /etc/apt/sources.list 2>/dev/null || true)
mirror=${mirror%%"
"*}
mirror=${mirror:-http://deb.debian.org/debian}

if ! configured "$suite-updates"; then
  echo "deb $mirror $suite-updates main" >> /etc/apt/sources.list
  echo "apt sources: added $suite-updates ($mirror)" >&2
fi
if ! configured "$suite-security"; then
  echo "deb $SECURITY_MIRROR $suite-security main" >> /etc/apt/sources.list
  echo "apt sources: added $suite-security ($SECURITY_MIRROR)" >&2
fi
lists="$lists /etc/apt/sources.list"
if ! configured "$suite-updates" || ! configured "$suite-security"; then
  echo "apt sources: $suite-updates or $suite-security still missing" >&2
  exit 1
fi
